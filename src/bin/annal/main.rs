//! The `annal` command-line tool (work in progress).

fn main() {
    eprintln!("annal: the command-line tool is not built yet");
    std::process::exit(2);
}
