//! The stages of a staged connection test (`takgate federation test`, `takgate quic test`):
//! each records ok or the error and how long it took, so an operator sees where a
//! connection breaks.

use std::time::Instant;

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    pub name: &'static str,
    pub ok: bool,
    pub ms: u64,
    pub detail: String,
}

/// The stages so far; each records ok or the error and how long it took.
pub struct Stages(pub Vec<Stage>);

impl Stages {
    /// Records a stage that started at `start`; its value when it passed.
    pub fn record<T>(&mut self, name: &'static str, start: Instant, r: Result<(T, String), String>) -> Option<T> {
        let ms = start.elapsed().as_millis() as u64;
        match r {
            Ok((v, detail)) => {
                self.0.push(Stage { name, ok: true, ms, detail });
                Some(v)
            }
            Err(detail) => {
                self.0.push(Stage { name, ok: false, ms, detail });
                None
            }
        }
    }
}

