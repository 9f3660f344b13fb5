//! Cold-cache copies: the direct strategy against dd and cp (being written).
fn main() {
    println!("direct bench: not written yet");
}
