//! corralctl: args -> cli::run().

fn main() {
    std::process::exit(corral::cli::run());
}
