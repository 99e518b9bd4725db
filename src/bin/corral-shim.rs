//! corral-shim: the per-process keeper; see `corral::shim`.

fn main() {
    std::process::exit(corral::shim::main());
}
