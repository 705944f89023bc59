// `sqlx::migrate!` embeds store/migrations at compile time; without this a new migration
// file does not rebuild the crate and a stale binary runs an old schema.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
