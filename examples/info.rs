//! Prints the adapter flashdot opens and everything `Context::info()` reports.
//! Exits non-zero with a readable message when no adapter is found.

#[path = "common/mod.rs"]
mod common;

use clap::Parser;

#[derive(Parser)]
#[command(about = "flashdot adapter info: the adapter flashdot opens and what it reports")]
struct Args {
    /// Backend (default: the best adapter of Vulkan, Metal and DX12; GL if none).
    #[arg(long, value_enum)]
    backend: Option<common::Backend>,
}

fn main() {
    env_logger::init();
    let a = Args::parse();
    match common::context(a.backend) {
        Ok(ctx) => println!("{}", ctx.info()),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
