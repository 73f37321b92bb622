//! The `lodestar` binary: parses the command line and configuration, then runs one subcommand.

mod accounts;
mod api;
mod bench;
mod cli;
mod config;
mod cut;
mod dashboard;
mod generate;
mod health;
mod ingest;
mod models;
mod pipeline;
mod train;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use crate::cli::{Cli, Command};

/// mimalloc instead of glibc's allocator: scoring allocates each row's stored text on the
/// scoring threads and the writer frees it on another, which glibc's arenas make costly (a
/// tenth of the score step's time went to malloc and free); the services allocate per request
/// on every worker thread alike.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = config::Config::resolve(&cli.global, &matches).and_then(|config| {
        config.init_logging()?;
        match &cli.command {
            Command::Config(args) => config.print(args.json),
            Command::Generate(args) => generate::run(&config, args),
            Command::Cut(args) => cut::run(args),
            Command::Ingest(args) => ingest::run(&config, args),
            Command::Migrate => models::migrate(&config),
            Command::Purge { older_than_days } => models::purge(&config, *older_than_days),
            Command::Evaluate(args) => train::evaluate(&config, args),
            Command::Train(args) => train::train(&config, args),
            Command::Models(command) => models::run(&config, command),
            Command::Bench(cli::BenchCommand::Ingest(args)) => bench::run_ingest(&config, args),
            Command::Bench(cli::BenchCommand::Api(args)) => api::bench(&config, args),
            Command::Bench(cli::BenchCommand::Score(args)) => bench::run_score(&config, args),
            Command::Api(args) => api::run(&config, args),
            Command::Tokens(command) => api::tokens(&config, command),
            Command::Dashboard(args) => dashboard::run(&config, args),
            Command::Users(command) => dashboard::users(&config, command),
            Command::Pipeline(command) => pipeline::run(&config, command),
            Command::Scheduler(args) => pipeline::scheduler(&config, args),
            Command::Up(args) => pipeline::up(&config, args),
            Command::Demo(args) => pipeline::demo(&config, args),
            Command::Healthcheck(args) => health::run(args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
