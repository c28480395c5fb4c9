//! `npzfs [OPTIONS] ARCHIVE MOUNTPOINT` (or `npzfs --list [--json] ARCHIVE`, or
//! `npzfs --stats [--json] MOUNTPOINT`): parse, start logging, run, map errors to exit codes.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use npzfs::options::{self, Parsed};
use npzfs::{daemon, extract, list, logging, manpage, stats};

fn main() {
    // `npzfs extract ...` has a command line of its own.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "extract") {
        let request = match extract::parse(args[2..].to_vec()) {
            Ok(Ok(request)) => request,
            Ok(Err(clap_says)) => clap_says.exit(),
            Err(e) => fail(&e),
        };
        // The failure is its one line; what the cache logs on the way says it again.
        logging::init(log::LevelFilter::Error);
        if let Err(e) = extract::run(&request, &mut std::io::stdout().lock()) {
            fail(&e);
        }
        return;
    }
    let opts = match options::parse(args) {
        Ok(Parsed::Run(opts)) => opts,
        Ok(Parsed::Exit(clap_says)) => clap_says.exit(),
        Ok(Parsed::ManPage) => {
            if let Err(e) = manpage::render(&mut std::io::stdout().lock()) {
                eprintln!("npzfs: cannot write the man page: {e}");
                std::process::exit(1);
            }
            return;
        }
        Ok(Parsed::List { archive, json }) => {
            if let Err(e) = list::run(&archive, json, &mut std::io::stdout().lock()) {
                fail(&e);
            }
            return;
        }
        Ok(Parsed::Stats { mountpoint, json }) => {
            if let Err(e) = stats::table::run(&mountpoint, json, &mut std::io::stdout().lock()) {
                fail(&e);
            }
            return;
        }
        Err(e) => fail(&e),
    };
    logging::init(opts.log_level);
    if let Err(e) = daemon::run(&opts) {
        fail(&e);
    }
}

fn fail(e: &npzfs::error::Error) -> ! {
    eprintln!("npzfs: {e}");
    std::process::exit(e.exit_code())
}
