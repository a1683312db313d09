//! Every SDK feature in one module, for the host and SDK tests: lifecycle reducers,
//! unique and btree lookups (multi-column and ranges included), user types, return
//! values, logging, a tick system and scheduled reducers.

use tickdb::{
    Identity, ReducerContext, ScheduleAt, Table, TimeDuration, Type, client_visibility_filter, reducer,
    table, tick,
};

#[derive(Type, Debug, Clone, PartialEq)]
pub enum Class {
    Warrior,
    Mage { mana: u32 },
    Rogue(u8),
}

#[derive(Type, Debug, Clone, Copy, PartialEq)]
pub struct Vec2 {
    pub x: f32,
    pub y: f32,
}

#[table(accessor = hero, public, index(name = by_zone_level, btree(columns = [zone, level])))]
#[derive(Debug, Clone)]
pub struct Hero {
    #[primary_key]
    #[auto_inc]
    id: u64,
    #[unique]
    name: String,
    owner: Identity,
    #[index(btree)]
    level: u32,
    zone: u32,
    class: Class,
    pos: Vec2,
    tags: Vec<String>,
}

/// Map markers, found by area through a grid index (SQL only).
#[table(accessor = marker, public, index(name = area, grid(columns = [x, y], cell = 16)))]
#[derive(Debug)]
pub struct Marker {
    #[primary_key]
    #[auto_inc]
    id: u64,
    x: f32,
    y: f32,
}

/// Clients see their own heroes only.
#[client_visibility_filter]
const OWN_HEROES: &str = "SELECT * FROM hero WHERE owner = :sender";

#[table(accessor = config)]
#[derive(Debug)]
pub struct Config {
    #[primary_key]
    key: String,
    value: u64,
}

#[table(accessor = reminder, scheduled(remind))]
#[derive(Debug)]
pub struct Reminder {
    #[primary_key]
    #[auto_inc]
    id: u64,
    at: ScheduleAt,
    text: String,
}

#[table(accessor = event, public)]
#[derive(Debug)]
pub struct Event {
    #[primary_key]
    #[auto_inc]
    id: u64,
    kind: String,
    micros: i64,
}

#[reducer(init)]
pub fn init(ctx: &ReducerContext) {
    ctx.db.config().insert(Config { key: "initialized".into(), value: 1 });
    log::info!("initialized");
}

#[reducer(client_connected)]
pub fn connected(ctx: &ReducerContext) -> Result<(), String> {
    if ctx.db.config().key().find("banned".to_string()).is_some_and(|c| c.value == 1) {
        return Err("the server is closed".into());
    }
    ctx.db.event().insert(Event { id: 0, kind: "connect".into(), micros: ctx.timestamp.micros_since_epoch });
    Ok(())
}

#[reducer]
pub fn set_config(ctx: &ReducerContext, key: String, value: u64) {
    match ctx.db.config().key().find(&key) {
        Some(_) => {
            ctx.db.config().key().update(Config { key, value });
        }
        None => {
            ctx.db.config().insert(Config { key, value });
        }
    }
}

/// Creates a hero and returns it (with its id filled).
#[reducer]
pub fn create_hero(
    ctx: &ReducerContext,
    name: String,
    level: u32,
    zone: u32,
    class: Class,
) -> Result<Hero, String> {
    let hero = Hero {
        id: 0,
        name,
        owner: ctx.sender,
        level,
        zone,
        class,
        pos: Vec2 { x: 0.0, y: 0.0 },
        tags: vec![],
    };
    ctx.db.hero().try_insert(hero).map_err(|e| e.to_string())
}

/// Names of heroes with level in `[low, high)`, in level order.
#[reducer]
pub fn levels_between(ctx: &ReducerContext, low: u32, high: u32) -> Result<Vec<String>, String> {
    Ok(ctx.db.hero().level().filter(low..high).map(|h| h.name).collect())
}

/// Names of heroes in a zone (prefix of the two-column index) and, if `level` is set,
/// at that level (the whole key).
#[reducer]
pub fn in_zone(ctx: &ReducerContext, zone: u32, level: Option<u32>) -> Result<Vec<String>, String> {
    let index = ctx.db.hero().by_zone_level();
    let heroes: Vec<Hero> = match level {
        Some(level) => index.filter((zone, level)).collect(),
        None => index.filter(zone).collect(),
    };
    Ok(heroes.into_iter().map(|h| h.name).collect())
}

#[reducer]
pub fn rename(ctx: &ReducerContext, id: u64, name: String) -> Result<(), String> {
    let hero = ctx.db.hero().id().find(id).ok_or("no such hero")?;
    ctx.db.hero().id().try_update(Hero { name, ..hero }).map(|_| ()).map_err(|e| e.to_string())
}

#[reducer]
pub fn move_hero(ctx: &ReducerContext, id: u64, to: Vec2) -> Result<(), String> {
    let hero = ctx.db.hero().id().find(id).ok_or("no such hero")?;
    if hero.owner != ctx.sender {
        return Err("not your hero".into());
    }
    ctx.db.hero().id().update(Hero { pos: to, ..hero });
    Ok(())
}

/// Deletes heroes below `level` through the index range; returns how many.
#[reducer]
pub fn cull(ctx: &ReducerContext, level: u32) -> Result<u64, String> {
    Ok(ctx.db.hero().level().delete(..level))
}

#[reducer]
pub fn delete_hero(ctx: &ReducerContext, name: String) -> Result<bool, String> {
    Ok(ctx.db.hero().name().delete(name))
}

#[reducer]
pub fn hero_count(ctx: &ReducerContext) -> Result<u64, String> {
    Ok(ctx.db.hero().count())
}

#[reducer]
pub fn total_levels(ctx: &ReducerContext) -> Result<u64, String> {
    Ok(ctx.db.hero().iter().map(|h| u64::from(h.level)).sum())
}

#[reducer]
pub fn roll(ctx: &ReducerContext) -> Result<u64, String> {
    Ok(ctx.rng().next_u64())
}

#[reducer]
pub fn remind_in(ctx: &ReducerContext, micros: i64, text: String, repeat: bool) {
    let at = if repeat {
        ScheduleAt::Interval(TimeDuration::from_micros(micros))
    } else {
        ScheduleAt::Time(tickdb::Timestamp::from_micros(ctx.timestamp.micros_since_epoch + micros))
    };
    ctx.db.reminder().insert(Reminder { id: 0, at, text });
}

#[reducer]
pub fn remind(ctx: &ReducerContext, reminder: Reminder) {
    log::info!("reminder: {}", reminder.text);
    ctx.db.event().insert(Event {
        id: 0,
        kind: format!("remind:{}", reminder.text),
        micros: ctx.timestamp.micros_since_epoch,
    });
}

#[reducer]
pub fn cancel_reminders(ctx: &ReducerContext) {
    let ids: Vec<u64> = ctx.db.reminder().iter().map(|r| r.id).collect();
    for id in ids {
        ctx.db.reminder().id().delete(id);
    }
}

/// Counts its runs while `ticking` is set in the config.
#[tick(hz = 50)]
pub fn heartbeat(ctx: &ReducerContext) {
    if ctx.db.config().key().find("ticking".to_string()).is_some_and(|c| c.value == 1) {
        let micros = ctx.delta_time().micros;
        ctx.db.event().insert(Event { id: 0, kind: "tick".into(), micros });
    }
}

/// Deletes the config row equal to `(key, value)` by value; returns whether it was there.
#[reducer]
pub fn delete_config(ctx: &ReducerContext, key: String, value: u64) -> Result<bool, String> {
    Ok(ctx.db.config().delete(Config { key, value }))
}

/// Moves every one-shot reminder to `micros` from now.
#[reducer]
pub fn postpone_reminders(ctx: &ReducerContext, micros: i64) {
    let at = ScheduleAt::Time(tickdb::Timestamp::from_micros(ctx.timestamp.micros_since_epoch + micros));
    let reminders: Vec<Reminder> = ctx.db.reminder().iter().collect();
    for r in reminders {
        if matches!(r.at, ScheduleAt::Time(_)) {
            ctx.db.reminder().id().update(Reminder { at, ..r });
        }
    }
}

/// Changes every reminder's text, not its time.
#[reducer]
pub fn touch_reminders(ctx: &ReducerContext) {
    let reminders: Vec<Reminder> = ctx.db.reminder().iter().collect();
    for r in reminders {
        ctx.db.reminder().id().update(Reminder { text: format!("{}!", r.text), ..r });
    }
}
