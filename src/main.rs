//! The `rrbalancer` binary: everything is in the library's [`rrbalancer::main`].

fn main() -> std::process::ExitCode {
    rrbalancer::main()
}
