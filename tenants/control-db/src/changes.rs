//! The change counter: bumped, inside the writing transaction, by every change
//! that affects feature evaluation or tenant keys (tenants, plans, overrides,
//! keys, schema versions). API processes poll it and reload their in-memory
//! copy when it moves, so several replicas stay right without querying the
//! database on the hot path.

use diesel::prelude::*;

use crate::db::ControlConnection;
use crate::error::Result;
use crate::schema::change_counter;

pub fn bump(conn: &mut ControlConnection) -> Result<()> {
    diesel::update(change_counter::table.find(1))
        .set(change_counter::value.eq(change_counter::value + 1))
        .execute(conn)?;
    Ok(())
}

pub fn current(conn: &mut ControlConnection) -> Result<i64> {
    Ok(change_counter::table
        .find(1)
        .select(change_counter::value)
        .first(conn)?)
}
