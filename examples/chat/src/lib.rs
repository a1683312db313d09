//! The quickstart chat module: users keyed by identity with a name and an online flag,
//! and messages. Clients set their name and send messages; connecting and disconnecting
//! keeps the online flag current.

use tickdb::{Identity, ReducerContext, Table, Timestamp, reducer, table};

#[table(accessor = user, public)]
#[derive(Debug, Clone)]
pub struct User {
    #[primary_key]
    identity: Identity,
    name: Option<String>,
    online: bool,
}

#[table(accessor = message, public)]
#[derive(Debug, Clone)]
pub struct Message {
    sender: Identity,
    sent: Timestamp,
    text: String,
}

/// The longest name, in characters.
const NAME_MAX: usize = 32;
/// The longest message, in characters.
const MESSAGE_MAX: usize = 1000;

fn validate_name(name: String) -> Result<String, String> {
    let name = name.trim().to_string();
    if name.is_empty() {
        return Err("names must not be empty".into());
    }
    if name.chars().count() > NAME_MAX {
        return Err(format!("names are at most {NAME_MAX} characters"));
    }
    Ok(name)
}

#[reducer]
pub fn set_name(ctx: &ReducerContext, name: String) -> Result<(), String> {
    let name = validate_name(name)?;
    let user = ctx.db.user().identity().find(ctx.sender).ok_or("cannot set the name of an unknown user")?;
    log::info!("{} is now called {name}", ctx.sender);
    ctx.db.user().identity().update(User { name: Some(name), ..user });
    Ok(())
}

fn validate_message(text: String) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err("messages must not be empty".into());
    }
    if text.chars().count() > MESSAGE_MAX {
        return Err(format!("messages are at most {MESSAGE_MAX} characters"));
    }
    Ok(text)
}

#[reducer]
pub fn send_message(ctx: &ReducerContext, text: String) -> Result<(), String> {
    let text = validate_message(text)?;
    if ctx.db.user().identity().find(ctx.sender).is_none() {
        return Err("connect before sending messages".into());
    }
    ctx.db.message().insert(Message { sender: ctx.sender, sent: ctx.timestamp, text });
    Ok(())
}

#[reducer(client_connected)]
pub fn client_connected(ctx: &ReducerContext) {
    match ctx.db.user().identity().find(ctx.sender) {
        Some(user) => {
            ctx.db.user().identity().update(User { online: true, ..user });
        }
        None => {
            ctx.db.user().insert(User { identity: ctx.sender, name: None, online: true });
        }
    }
}

#[reducer(client_disconnected)]
pub fn client_disconnected(ctx: &ReducerContext) {
    match ctx.db.user().identity().find(ctx.sender) {
        Some(user) => {
            ctx.db.user().identity().update(User { online: false, ..user });
        }
        None => log::warn!("disconnect from unknown user {}", ctx.sender),
    }
}
