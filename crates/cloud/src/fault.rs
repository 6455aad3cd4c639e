//! Fault injection for the crash tests of the sagas.

/// A test build dies here when `SNAPSTACK_FAULT_INJECT` names this point,
/// as a SIGKILL would: no cleanup, no unwinding. Release builds ignore it.
pub(crate) fn fault_point(name: &str) {
    if cfg!(debug_assertions) && std::env::var("SNAPSTACK_FAULT_INJECT").is_ok_and(|v| v == name) {
        eprintln!("fault injection: dying at {name}");
        std::process::abort();
    }
}
