//! Every integration test of the mesh, as modules of one test binary: LibTorch is linked once
//! (not once per file, which dominated the tier's build on small machines), and every test
//! shares the harness in `facesweep_tests` (`wait_until`, `bin`, `TestDb`, the services).
//! Tests run as threads of one process, so none may change process-wide state (env, cwd,
//! signal handlers, a global subscriber); a test that must gets its own `[[test]]`. Metrics
//! registries are per service instance, so a test reads only its own services' /metrics.

mod ab;
mod accuracy;
mod api;
mod backlog;
mod chaos;
mod chaos_net;
mod cli_memory;
mod dashboard;
mod detector_load;
mod discovery;
mod e2e;
mod elastic;
mod faults;
mod image;
mod inputs;
mod leases;
mod lifecycle;
mod live;
mod model;
mod mtls;
mod operator_races;
mod outages;
mod parquet;
mod progressive;
mod tracing;
mod watch;
mod wire;
