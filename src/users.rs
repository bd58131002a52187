//! `llm-router users …`: admin users of the admin API, through the same operations the API
//! uses (`control`).

use std::io::BufRead as _;

use clap::Subcommand;
use schemas::Role;

use crate::config::Config;
use crate::{admin, applied, run};

/// The roles, as `--role` takes them.
fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| "one of owner, admin, viewer, billing".to_owned())
}

/// Admin users.
#[derive(Subcommand)]
pub enum UserCmd {
    /// Creates an admin user; a generated password is printed once, alone on the last line.
    Create {
        /// Login email.
        #[arg(long)]
        email: String,
        /// owner (everything), admin (everything but owners), viewer (read only), billing
        /// (reports and budgets).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Scope the user to this tenant: it sees and changes only that tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Read the password from the first line of stdin instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Lists users (id, email, role, tenant, state).
    List,
    /// Disables a user by id or email: it can no longer log in and its tokens stop working.
    Disable {
        /// User id or email.
        user: String,
    },
}

fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Runs a `users` command.
pub async fn run(cfg: &Config, cmd: UserCmd) -> anyhow::Result<()> {
    let log = run::open_log(cfg).await?;
    match cmd {
        UserCmd::Create { email, role, tenant, password_stdin } => {
            let password = if password_stdin { Some(read_password()?) } else { None };
            let new = control::NewUser { email, role, tenant, password };
            let user = admin::admin(&log).create_user(new).await?;
            applied::wait(&cfg.data_dir, &log).await;
            run::say(&format!("User {} ({}) created with role {role}.", user.user_id, user.email));
            if let Some(p) = user.generated_password {
                run::say("Its password is shown once:");
                run::say(&p);
            }
        }
        UserCmd::List => {
            let model = control::load(&log).await?;
            for u in model.users.values() {
                let state = if u.disabled() { "disabled" } else { "active" };
                let tenant = u.tenant.as_deref().unwrap_or("*");
                run::say(&format!("{}\t{}\t{}\t{tenant}\t{state}", u.user_id, u.email, u.role));
            }
        }
        UserCmd::Disable { user } => {
            let id = admin::admin(&log).disable_user(&user).await?;
            applied::wait(&cfg.data_dir, &log).await;
            run::say(&format!("User {id} disabled."));
        }
    }
    Ok(())
}
