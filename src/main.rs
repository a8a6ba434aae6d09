fn main() {
    std::process::exit(hearth::cli::main())
}
