//! The meshcap example sidecar (scaffold; the commands land with their issues).

fn main() {
    eprintln!("sidecar: not built yet");
    std::process::exit(2);
}
