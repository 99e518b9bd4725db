//! `corral-shim`: the per-process shim corrald starts; all logic lives in
//! `corral::shim` so corrald shares its wire types.

fn main() {
    std::process::exit(corral::shim::main());
}
