//! Prints the adapter flashdot opens and everything `Context::info()` reports.
//! Exits non-zero with a readable message when no adapter is found.

fn main() {
    env_logger::init();
    match flashdot::Context::new() {
        Ok(ctx) => println!("{}", ctx.info()),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
