//! An MMO-style world, the workload tickdb is built for.
//!
//! The world is 1,024 × 1,024 units in 4 × 4 zones of 256. Players join with a name,
//! move (`move_to`, the client sending its position and heading many times a second),
//! attack a target in range, die, and respawn three seconds later through a scheduled
//! reducer. NPCs wander, moved by a tick system at 20 Hz. Each zone has a chat. Each
//! player has an inventory that only they can read (a visibility rule).
//!
//! Clients keep an area-of-interest subscription around their position, which the
//! grid indexes on `player` and `npc` answer:
//! `SELECT * FROM player WHERE x BETWEEN 100 AND 164 AND y BETWEEN 40 AND 104`, and
//! move it as they move. (Inclusive bounds are the whole condition for the server's
//! area-of-interest index, so a changed row is matched to windows without evaluating
//! the queries; strict bounds make it check each window found.)

use tickdb::{
    Identity, ReducerContext, ScheduleAt, Table, Timestamp, Type, client_visibility_filter, reducer, table,
    tick,
};

/// The world's side, in units.
pub const WORLD_SIZE: f32 = 1024.0;
/// A zone's side: the world has 4 × 4 zones.
pub const ZONE_SIZE: f32 = 256.0;
/// How far an attack reaches.
pub const ATTACK_RANGE: f32 = 4.0;
/// The damage of one attack.
pub const ATTACK_DAMAGE: i32 = 10;
/// A new or respawned character's hit points.
pub const HP_MAX: i32 = 100;
/// How long the dead wait to respawn.
pub const RESPAWN_MICROS: i64 = 3_000_000;
/// How far a player may move in one `move_to` (anti-teleport).
pub const MOVE_MAX: f32 = 32.0;
/// NPCs in the world, spawned by `init`.
pub const NPCS: u32 = 200;
/// NPC speed, units per second.
pub const NPC_SPEED: f32 = 4.0;
/// The longest chat message and name, in characters.
pub const TEXT_MAX: usize = 200;
pub const NAME_MAX: usize = 24;

#[table(accessor = player, public, index(name = player_area, grid(columns = [x, y], cell = 16)))]
#[derive(Debug, Clone)]
pub struct Player {
    #[primary_key]
    identity: Identity,
    name: String,
    x: f32,
    y: f32,
    heading: f32,
    hp: i32,
    #[index(btree)]
    zone: u32,
    alive: bool,
    online: bool,
}

#[table(accessor = npc, public, index(name = npc_area, grid(columns = [x, y], cell = 16)))]
#[derive(Debug, Clone)]
pub struct Npc {
    #[primary_key]
    #[auto_inc]
    id: u64,
    x: f32,
    y: f32,
    heading: f32,
    hp: i32,
    zone: u32,
}

/// What an attack aims at.
#[derive(Type, Debug, Clone, Copy, PartialEq)]
pub enum Target {
    Player(Identity),
    Npc(u64),
}

/// A dead player waiting to respawn: `respawn` runs at `at`.
#[table(accessor = respawn_queue, scheduled(respawn))]
#[derive(Debug, Clone)]
pub struct Respawn {
    #[primary_key]
    #[auto_inc]
    id: u64,
    at: ScheduleAt,
    identity: Identity,
}

#[table(accessor = zone_chat, public)]
#[derive(Debug, Clone)]
pub struct ZoneChat {
    #[primary_key]
    #[auto_inc]
    id: u64,
    #[index(btree)]
    zone: u32,
    sender: Identity,
    sent: Timestamp,
    text: String,
}

/// Items a player carries; each player reads only their own.
#[table(accessor = inventory, public)]
#[derive(Debug, Clone)]
pub struct Inventory {
    #[primary_key]
    #[auto_inc]
    id: u64,
    #[index(btree)]
    owner: Identity,
    item: String,
    count: u32,
}

#[client_visibility_filter]
const OWN_INVENTORY: &str = "SELECT * FROM inventory WHERE owner = :sender";

/// The zone of a position.
pub fn zone_of(x: f32, y: f32) -> u32 {
    let cell = |v: f32| ((v / ZONE_SIZE) as u32).min((WORLD_SIZE / ZONE_SIZE) as u32 - 1);
    cell(x) + 4 * cell(y)
}

fn in_world(v: f32) -> f32 {
    v.clamp(0.0, WORLD_SIZE - 0.001)
}

fn random_spot(ctx: &ReducerContext) -> (f32, f32) {
    (ctx.rng().next_f32() * WORLD_SIZE, ctx.rng().next_f32() * WORLD_SIZE)
}

#[reducer(init)]
pub fn init(ctx: &ReducerContext) {
    for _ in 0..NPCS {
        let (x, y) = random_spot(ctx);
        let heading = ctx.rng().next_f32() * std::f32::consts::TAU;
        ctx.db.npc().insert(Npc { id: 0, x, y, heading, hp: HP_MAX, zone: zone_of(x, y) });
    }
}

fn check_text(text: &str, max: usize, what: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if text.chars().count() > max {
        return Err(format!("{what} is at most {max} characters"));
    }
    Ok(())
}

/// Enters the world (again): a new character at a random spot with a starting
/// inventory, or the existing one back online.
#[reducer]
pub fn join(ctx: &ReducerContext, name: String) -> Result<(), String> {
    check_text(&name, NAME_MAX, "a name")?;
    if let Some(player) = ctx.db.player().identity().find(ctx.sender) {
        ctx.db.player().identity().update(Player { name, online: true, ..player });
        return Ok(());
    }
    let (x, y) = random_spot(ctx);
    let player = Player {
        identity: ctx.sender,
        name,
        x,
        y,
        heading: 0.0,
        hp: HP_MAX,
        zone: zone_of(x, y),
        alive: true,
        online: true,
    };
    ctx.db.player().insert(player);
    for (item, count) in [("potion", 3), ("bread", 5)] {
        ctx.db.inventory().insert(Inventory { id: 0, owner: ctx.sender, item: item.into(), count });
    }
    Ok(())
}

fn me(ctx: &ReducerContext) -> Result<Player, String> {
    ctx.db.player().identity().find(ctx.sender).ok_or_else(|| "join the world first".to_string())
}

/// Moves to `(x, y)`, facing `heading`: at most `MOVE_MAX` from where the player is.
#[reducer]
pub fn move_to(ctx: &ReducerContext, x: f32, y: f32, heading: f32) -> Result<(), String> {
    let player = me(ctx)?;
    if !player.alive {
        return Err("the dead do not move".into());
    }
    if !(x.is_finite() && y.is_finite() && heading.is_finite()) {
        return Err("positions are finite numbers".into());
    }
    let (x, y) = (in_world(x), in_world(y));
    if (x - player.x).hypot(y - player.y) > MOVE_MAX {
        return Err(format!("too far for one move (at most {MOVE_MAX})"));
    }
    ctx.db.player().identity().update(Player { x, y, heading, zone: zone_of(x, y), ..player });
    Ok(())
}

/// Attacks a player or an NPC within `ATTACK_RANGE`. A player brought to 0 hit
/// points dies and respawns `RESPAWN_MICROS` later; an NPC respawns at once
/// somewhere else.
#[reducer]
pub fn attack(ctx: &ReducerContext, target: Target) -> Result<(), String> {
    let attacker = me(ctx)?;
    if !attacker.alive {
        return Err("the dead do not fight".into());
    }
    let in_range = |x: f32, y: f32| (x - attacker.x).hypot(y - attacker.y) <= ATTACK_RANGE;
    match target {
        Target::Player(identity) => {
            if identity == ctx.sender {
                return Err("you cannot attack yourself".into());
            }
            let victim = ctx.db.player().identity().find(identity).ok_or("no such player")?;
            if !victim.alive || !in_range(victim.x, victim.y) {
                return Err("the target is out of range".into());
            }
            let hp = victim.hp - ATTACK_DAMAGE;
            if hp <= 0 {
                log::info!("{} defeated {}", attacker.name, victim.name);
                let at = ScheduleAt::Time(Timestamp::from_micros(
                    ctx.timestamp.micros_since_epoch + RESPAWN_MICROS,
                ));
                ctx.db.respawn_queue().insert(Respawn { id: 0, at, identity });
            }
            ctx.db.player().identity().update(Player { hp: hp.max(0), alive: hp > 0, ..victim });
        }
        Target::Npc(id) => {
            let npc = ctx.db.npc().id().find(id).ok_or("no such NPC")?;
            if !in_range(npc.x, npc.y) {
                return Err("the target is out of range".into());
            }
            let hp = npc.hp - ATTACK_DAMAGE;
            if hp <= 0 {
                let (x, y) = random_spot(ctx);
                ctx.db.npc().id().update(Npc { x, y, hp: HP_MAX, zone: zone_of(x, y), ..npc });
            } else {
                ctx.db.npc().id().update(Npc { hp, ..npc });
            }
        }
    }
    Ok(())
}

/// Brings a dead player back, at a random spot with full hit points.
#[reducer]
pub fn respawn(ctx: &ReducerContext, row: Respawn) {
    let Some(player) = ctx.db.player().identity().find(row.identity) else { return };
    let (x, y) = random_spot(ctx);
    ctx.db.player().identity().update(Player {
        x,
        y,
        hp: HP_MAX,
        alive: true,
        zone: zone_of(x, y),
        ..player
    });
}

/// Says something to everyone in the speaker's zone.
#[reducer]
pub fn say(ctx: &ReducerContext, text: String) -> Result<(), String> {
    check_text(&text, TEXT_MAX, "a message")?;
    let player = me(ctx)?;
    ctx.db.zone_chat().insert(ZoneChat {
        id: 0,
        zone: player.zone,
        sender: ctx.sender,
        sent: ctx.timestamp,
        text,
    });
    Ok(())
}

/// Uses one of an item the player carries.
#[reducer]
pub fn use_item(ctx: &ReducerContext, item: String) -> Result<(), String> {
    let player = me(ctx)?;
    let held = ctx.db.inventory().owner().filter(ctx.sender).find(|i| i.item == item);
    let held = held.ok_or_else(|| format!("you carry no {item}"))?;
    match held.count {
        1 => {
            ctx.db.inventory().delete(held.clone());
        }
        n => {
            ctx.db.inventory().id().update(Inventory { count: n - 1, ..held.clone() });
        }
    }
    if item == "potion" && player.alive {
        ctx.db.player().identity().update(Player { hp: (player.hp + 30).min(HP_MAX), ..player });
    }
    Ok(())
}

/// NPCs wander: each moves along its heading, turning at the world's edge and now
/// and then at random. The world runs at this system's 20 Hz: players' calls wait
/// for its next tick and run together in it (`batch_calls`), so each client gets at
/// most one update every 50 ms however many players move.
#[tick(hz = 20, batch_calls)]
pub fn npc_wander(ctx: &ReducerContext) {
    let dt = ctx.delta_time().micros as f32 / 1e6;
    let npcs: Vec<Npc> = ctx.db.npc().iter().collect();
    for npc in npcs {
        let mut heading = npc.heading;
        if ctx.rng().next_f32() < 0.01 {
            heading = ctx.rng().next_f32() * std::f32::consts::TAU;
        }
        let (mut x, mut y) = (npc.x + heading.cos() * NPC_SPEED * dt, npc.y + heading.sin() * NPC_SPEED * dt);
        if !(0.0..WORLD_SIZE).contains(&x) || !(0.0..WORLD_SIZE).contains(&y) {
            heading += std::f32::consts::PI;
            (x, y) = (in_world(x), in_world(y));
        }
        ctx.db.npc().id().update(Npc { x, y, heading, zone: zone_of(x, y), ..npc });
    }
}

#[reducer(client_connected)]
pub fn client_connected(ctx: &ReducerContext) {
    if let Some(player) = ctx.db.player().identity().find(ctx.sender) {
        ctx.db.player().identity().update(Player { online: true, ..player });
    }
}

#[reducer(client_disconnected)]
pub fn client_disconnected(ctx: &ReducerContext) {
    if let Some(player) = ctx.db.player().identity().find(ctx.sender) {
        ctx.db.player().identity().update(Player { online: false, ..player });
    }
}
