//! Admin users: create, change, disable, log out; and the session-signing secret. Passwords are
//! hashed with argon2id on the blocking pool (the hash is deliberately slow, and must not hold
//! an async worker thread); only the hash enters the log.

use schemas::control::{ControlModel, User};
use schemas::secret::MasterKey;
use schemas::{
    EventBody, GLOBAL_TENANT, Role, SESSION_SECRET_CONTEXT, SessionSecretGenerated, TenantId, UserCreated,
    UserDisabled, UserSessionsRevoked, UserUpdated,
};

use crate::{Admin, AdminError, load};

/// The longest email accepted (RFC 5321's path limit).
const MAX_EMAIL: usize = 254;

/// What `users create` needs.
#[derive(Clone)]
pub struct NewUser {
    /// Login name; trimmed and lower-cased.
    pub email: String,
    /// The role.
    pub role: Role,
    /// The one tenant the user sees; `None` = every tenant.
    pub tenant: Option<String>,
    /// The password; `None` generates one (returned once).
    pub password: Option<String>,
}

/// A user just created.
#[derive(Clone)]
pub struct CreatedUser {
    /// `usr_…`
    pub user_id: String,
    /// The normalised email.
    pub email: String,
    /// The generated password, when none was given: shown once.
    pub generated_password: Option<String>,
}

/// What `users update` changes; `None` keeps the current value.
#[derive(Clone, Default)]
pub struct UserChanges {
    /// New role.
    pub role: Option<Role>,
    /// New password (ends the user's sessions).
    pub password: Option<String>,
}

/// Trims and lower-cases an email and checks its shape: one `@` with text on both sides, no
/// whitespace or control characters, at most [`MAX_EMAIL`] bytes.
pub fn normalise_email(email: &str) -> Result<String, AdminError> {
    let email = email.trim().to_lowercase();
    let ok = email.len() <= MAX_EMAIL
        && email.split('@').count() == 2
        && email.split('@').all(|part| !part.is_empty())
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok { Ok(email) } else { Err(AdminError::BadEmail) }
}

/// Finds a user by id or email.
pub fn find_user<'a>(model: &'a ControlModel, needle: &str) -> Result<&'a User, AdminError> {
    if let Some(u) = model.users.get(needle) {
        return Ok(u);
    }
    let email = needle.trim().to_lowercase();
    model.user_by_email(&email).ok_or(AdminError::NoUser)
}

/// Hashes on the blocking pool.
async fn hash(password: String) -> Result<String, AdminError> {
    tokio::task::spawn_blocking(move || schemas::password::hash(&password))
        .await
        .map_err(|_| AdminError::Hashing)?
        .map_err(AdminError::BadPassword)
}

impl Admin {
    /// `users create`: the email must be free (disabled users keep theirs) and the tenant, when
    /// given, must exist.
    pub async fn create_user(&self, u: NewUser) -> Result<CreatedUser, AdminError> {
        let email = normalise_email(&u.email)?;
        let tenant = u.tenant.as_deref().map(TenantId::parse).transpose()?;
        if let Some(p) = &u.password {
            schemas::password::check(p).map_err(AdminError::BadPassword)?;
        }
        let model = load(self.log()).await?;
        if let Some(t) = &tenant
            && !model.tenants.contains_key(t.as_str())
        {
            return Err(AdminError::NoTenant(t.to_string()));
        }
        if model.user_by_email(&email).is_some() {
            return Err(AdminError::UserExists(email));
        }
        let generated = u.password.is_none().then(schemas::password::generate);
        let password = u.password.or_else(|| generated.clone()).unwrap_or_default();
        let password_hash = hash(password).await?;
        let user_id = format!("usr_{}", uuid::Uuid::now_v7().simple());
        let tenant = tenant.map(|t| t.to_string());
        let envelope_tenant = tenant.clone().unwrap_or_else(|| GLOBAL_TENANT.to_owned());
        let env = self.event(
            &envelope_tenant,
            EventBody::UserCreated(UserCreated {
                user_id: user_id.clone(),
                email: email.clone(),
                role: u.role,
                tenant,
                password_hash,
            }),
        );
        self.append(&env).await?;
        Ok(CreatedUser { user_id, email, generated_password: generated })
    }

    /// `users update ID_OR_EMAIL`: one `user.updated` with the fields given. Returns the id.
    /// Demoting an owner is checked and appended with [`Admin::owner_write`].
    pub async fn update_user(&self, needle: &str, c: UserChanges) -> Result<String, AdminError> {
        if let Some(p) = &c.password {
            schemas::password::check(p).map_err(AdminError::BadPassword)?;
        }
        // Hashed before the checks: they may be run more than once, the slow hash only once.
        let password_hash = match c.password {
            Some(p) => Some(hash(p).await?),
            None => None,
        };
        self.owner_write(needle, c.role.is_some_and(|r| r != Role::Owner), |user: &User| {
            if c.role.is_none() && password_hash.is_none() {
                return Err(AdminError::NoUserChange);
            }
            Ok(EventBody::UserUpdated(UserUpdated {
                user_id: user.user_id.clone(),
                role: c.role,
                password_hash: password_hash.clone(),
            }))
        })
        .await
    }

    /// `users disable ID_OR_EMAIL`: final; the user's tokens stop working. Returns the id.
    pub async fn disable_user(&self, needle: &str) -> Result<String, AdminError> {
        self.owner_write(needle, true, |user: &User| {
            Ok(EventBody::UserDisabled(UserDisabled { user_id: user.user_id.clone() }))
        })
        .await
    }

    /// Finds the enabled user `needle`, refuses to take the last enabled owner out of the owners
    /// when `removes_owner`, and appends the event `body` makes. Taking an owner out is a
    /// compare-and-append: the event lands only if the control stream still ends where the check
    /// read it, else the model is read again and the check redone, so two admins disabling or
    /// demoting the last two owners at once cannot both succeed (the second gets
    /// [`AdminError::LastOwner`]). Other writes append as usual.
    async fn owner_write(
        &self,
        needle: &str,
        removes_owner: bool,
        body: impl Fn(&User) -> Result<EventBody, AdminError>,
    ) -> Result<String, AdminError> {
        for _ in 0..OWNER_WRITE_ATTEMPTS {
            let (model, seen) = crate::load_at(self.log()).await?;
            let user = find_user(&model, needle)?;
            if user.disabled() {
                return Err(AdminError::UserDisabled(user.user_id.clone()));
            }
            let guarded = removes_owner && user.role == Role::Owner;
            if guarded {
                refuse_last_owner(&model, user)?;
            }
            let env = self.event(user_tenant(user), body(user)?);
            if !guarded {
                self.append(&env).await?;
                return Ok(user.user_id.clone());
            }
            if self.append_if_unchanged(&env, seen).await? {
                return Ok(user.user_id.clone());
            }
            tracing::debug!(user_id = %user.user_id, seen, "The control stream moved on; checking the owners again.");
        }
        Err(AdminError::Busy)
    }

    /// Logout: every token the user holds stops working.
    pub async fn revoke_sessions(&self, user_id: &str) -> Result<(), AdminError> {
        let model = load(self.log()).await?;
        let user = model.users.get(user_id).ok_or(AdminError::NoUser)?;
        let body = EventBody::UserSessionsRevoked(UserSessionsRevoked { user_id: user.user_id.clone() });
        self.append(&self.event(user_tenant(user), body)).await
    }

    /// Makes sure the log holds a session-signing secret, generating and sealing one if not.
    /// Two gateways racing both append; the control model keeps the first.
    pub async fn ensure_session_secret(&self, master: &MasterKey) -> Result<bool, AdminError> {
        let model = load(self.log()).await?;
        if model.session_secret.is_some() {
            return Ok(false);
        }
        let secret = schemas::keys::random_token();
        let body = EventBody::SessionSecretGenerated(SessionSecretGenerated {
            secret: master.seal(&secret, SESSION_SECRET_CONTEXT),
        });
        self.append(&self.event(GLOBAL_TENANT, body)).await?;
        Ok(true)
    }
}

fn user_tenant(user: &User) -> &str {
    user.tenant.as_deref().unwrap_or(GLOBAL_TENANT)
}

/// How often an owner-removing write reads the model again after another control event landed
/// first. Control events are admin writes and key state changes, a few a minute at most, so
/// running out means the stream is being flooded; the caller is asked to retry.
const OWNER_WRITE_ATTEMPTS: usize = 8;

/// Refuses to take `user` out of the owners when it is the only enabled one, in the model the
/// write's compare-and-append was read at ([`Admin::owner_write`]).
fn refuse_last_owner(model: &ControlModel, user: &User) -> Result<(), AdminError> {
    if user.role != Role::Owner || user.disabled() {
        return Ok(());
    }
    let owners = model.users.values().filter(|u| u.role == Role::Owner && !u.disabled()).count();
    if owners <= 1 {
        return Err(AdminError::LastOwner(user.user_id.clone()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_malformed_ones_refused() {
        assert_eq!(normalise_email("  Ops@Example.COM ").ok().as_deref(), Some("ops@example.com"));
        for bad in ["", "no-at", "@x", "x@", "a@b@c", "a b@c", "a@b\u{7}", &format!("{}@x", "a".repeat(260))] {
            assert!(matches!(normalise_email(bad), Err(AdminError::BadEmail)), "{bad:?}");
        }
    }
}
