//! The README's option and exit-code tables say what the command does: every `-o` option of
//! the table in `options.rs` and every exit code of the table in `error.rs`, and nothing else.

use std::collections::BTreeSet;

use npzfs::error::EXIT_CODES;
use npzfs::options::MOUNT_OPTIONS;

const README: &str = include_str!("../README.md");

/// The first cells of the rows of the table that follows `heading`.
fn first_cells(heading: &str) -> Vec<String> {
    let (_, after) = README.split_once(heading).expect("heading in README");
    after
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| l.split('|').nth(1).unwrap_or_default().trim().to_string())
        .collect()
}

#[test]
fn the_readme_lists_every_mount_option_and_no_other() {
    let readme: BTreeSet<String> = first_cells("| option | meaning |")
        .iter()
        .filter_map(|cell| cell.strip_prefix("`-o "))
        .map(|o| o.split(['=', '`']).next().unwrap_or_default().to_string())
        .collect();
    let table: BTreeSet<String> = MOUNT_OPTIONS.iter().map(|o| o.name.to_string()).collect();
    assert_eq!(readme, table);
}

#[test]
fn the_readme_lists_every_exit_code_and_no_other() {
    let readme: Vec<i32> = first_cells("### Exit codes")
        .iter()
        .map(|c| c.parse().expect("a code"))
        .collect();
    let table: Vec<i32> = EXIT_CODES.iter().map(|(c, _)| *c).collect();
    assert_eq!(readme, table);
}

#[test]
fn help_and_man_page_render_both_tables() {
    let help = npzfs::options::command().render_long_help().to_string();
    let mut man = Vec::new();
    npzfs::manpage::render(&mut man).unwrap();
    // roff escapes hyphens.
    let man = String::from_utf8(man).unwrap().replace("\\-", "-");
    for o in MOUNT_OPTIONS {
        assert!(help.contains(&o.usage()), "--help lacks {}", o.usage());
        assert!(man.contains(&o.usage()), "the man page lacks {}", o.usage());
    }
    for (code, what) in EXIT_CODES {
        assert!(
            help.contains(&format!("{code}  {what}")),
            "--help lacks exit code {code}"
        );
        assert!(man.contains(what), "the man page lacks exit code {code}");
    }
}
