//! PLACEHOLDER until the shim branch is merged.
use serde::{Deserialize, Serialize};
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LaunchSpec {
    pub id: String,
    pub run: u64,
    pub argv: Vec<String>,
    pub cwd: String,
    pub env: Vec<String>,
    pub log_dir: String,
    pub log_max_bytes: u64,
    pub log_files: u32,
    pub exit_file: String,
}
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExitRecord {
    pub run: u64,
    pub pid: u32,
    pub code: i32,
    pub signal: i32,
    pub core_dumped: bool,
    pub exited_at_us: u64,
}
pub fn main() -> i32 {
    1
}
