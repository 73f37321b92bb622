//! `lodestar dashboard` and `lodestar users …`: the advisor dashboard as its own service, and its
//! users (argon2 password hashes, generated passwords printed once, caseloads).

use anyhow::{Context, bail};
use lodestar_dashboard::Dashboard;

use crate::cli::{ServeArgs, UsersCommand};
use crate::config::Config;
use crate::models::connect;
use crate::pipeline::{runtime, shutdown_signal};

/// `lodestar dashboard`.
pub(crate) fn run(config: &Config, args: &ServeArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let store = connect(config).await?;
        let dashboard =
            Dashboard::new(store, config.dashboard.value.clone()).map_err(anyhow::Error::msg)?;
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("listening on {} (--listen, LODESTAR_LISTEN)", args.listen))?;
        let base = format!("http://{}", listener.local_addr()?);
        println!("serving the dashboard on {base}");
        println!("  {base}/healthz            liveness");
        println!("  {base}/signin             sign in (users come from `lodestar users create`)");
        dashboard
            .serve(listener, async {
                shutdown_signal().await;
                eprintln!("shutting down: finishing in-flight requests");
            })
            .await
            .context("the HTTP server")
    })
}

/// `lodestar users …`.
pub(crate) fn users(config: &Config, command: &UsersCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let store = connect(config).await?;
        match command {
            UsersCommand::Create { name, role } => {
                if name.trim().is_empty() {
                    bail!("--name: give the user a sign-in name");
                }
                if store.user(name).await?.is_some() {
                    bail!("user {name:?} exists (use `lodestar users reset-password --name {name}`)");
                }
                let password = crate::accounts::new_password();
                let id = store
                    .create_user(name, role, &crate::accounts::hash_password(&password)?)
                    .await?;
                println!("user {id} {name} ({role}); password, shown once: {password}");
            }
            UsersCommand::Assign { name, presentation, students } => {
                let user = store.user(name).await?.with_context(|| format!("no user {name:?}"))?;
                let (module, code) = presentation
                    .rsplit_once('-')
                    .with_context(|| format!("--presentation {presentation:?}: write MODULE-PRESENTATION, e.g. BBB-2013J"))?;
                let ids: Vec<i64> = if students.is_empty() {
                    let page = store.cohort(module, code, None, None, i64::MAX, 0).await?;
                    page.rows.iter().map(|p| p.prediction.id_student).collect()
                } else {
                    students.clone()
                };
                if ids.is_empty() {
                    bail!("no scored student in {presentation}: run the pipeline first, or list --students");
                }
                let rows: Vec<(String, String, i64)> =
                    ids.iter().map(|s| (module.to_owned(), code.to_owned(), *s)).collect();
                store.assign_many(user.id, &rows).await?;
                println!("{} students of {presentation} in {name}'s caseload", rows.len());
            }
            UsersCommand::ResetPassword { name } => {
                let user = store.user(name).await?.with_context(|| format!("no user {name:?}"))?;
                let password = crate::accounts::new_password();
                store
                    .set_password_hash(user.id, &crate::accounts::hash_password(&password)?)
                    .await?;
                store.sign_in_succeeded(user.id).await?;
                println!("new password for {name}, shown once: {password}");
            }
        }
        Ok(())
    })
}
