//! Flags and environment are read once, at a binary's edge: each service parses its clap
//! `Args` into a plain `Config`, and embedders (the CLI's mesh, tests) build `Config` values
//! directly, so nothing in a user's environment reaches them.

/// Every environment variable that `A` reads (its flags' `env` names, flattened ones included).
pub fn env_names<A: clap::CommandFactory>() -> Vec<String> {
    A::command()
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect()
}

/// `A` from `argv` (program name first) alone, without consulting the environment: for flags
/// a user hands an embedded service on the command line (`facesweep bench fetch -- …`).
pub fn parse_flags_only<A: clap::Parser>(
    argv: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
) -> Result<A, clap::Error> {
    let matches = A::command().mut_args(|a| a.env(None)).try_get_matches_from(argv)?;
    A::from_arg_matches(&matches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser, Debug)]
    struct Demo {
        #[arg(long, env = "FACESWEEP_CONFIG_TEST_N", default_value_t = 3)]
        n: u32,
        #[command(flatten)]
        tls: crate::tls::TlsArgs,
    }

    #[test]
    fn env_names_include_flattened_ones_and_flags_only_ignores_them() {
        let names = env_names::<Demo>();
        assert!(names.contains(&"FACESWEEP_CONFIG_TEST_N".to_string()), "{names:?}");
        assert!(names.contains(&"FACESWEEP_TLS_CERT".to_string()), "{names:?}");
        std::env::set_var("FACESWEEP_CONFIG_TEST_N", "nonsense");
        assert_eq!(parse_flags_only::<Demo>(["d"]).unwrap().n, 3);
        assert_eq!(parse_flags_only::<Demo>(["d", "--n", "5"]).unwrap().n, 5);
        assert!(
            <Demo as clap::Parser>::try_parse_from(["d"]).is_err(),
            "the env var is read by a plain parse"
        );
    }
}
