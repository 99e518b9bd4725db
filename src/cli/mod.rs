//! `corralctl`, the command-line client of corrald (being built: the
//! argument, spec and formatting layers; commands come next).

#![allow(dead_code)]

mod args;
mod error;
mod format;
mod render;
mod spec;

/// Runs `corralctl`; placeholder until the commands land.
pub fn run() -> i32 {
    0
}
