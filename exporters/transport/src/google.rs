//! Google Cloud: the project id, and OAuth tokens from Application Default
//! Credentials (or a given token provider) as `authorization` metadata, with the
//! quota project of the ADC credentials file.

use std::fmt;
use std::sync::Arc;

use tonic::metadata::{Ascii, MetadataValue};

use crate::Error;

/// The environment variable read when no project id is given.
pub const PROJECT_ENV: &str = "GOOGLE_CLOUD_PROJECT";

/// The Google Cloud project: `given`, else `GOOGLE_CLOUD_PROJECT`, trimmed.
/// Fails when there is none, or it holds a `/` or a space.
///
/// ```
/// use tracewire_transport::google::project_id;
///
/// assert_eq!(project_id(Some(" my-project ")).unwrap(), "my-project");
/// assert!(project_id(Some("projects/my-project")).is_err());
/// assert!(project_id(Some("")).is_err());
/// ```
pub fn project_id(given: Option<&str>) -> Result<String, Error> {
    let project_id = match given {
        Some(p) => p.to_owned(),
        None => std::env::var(PROJECT_ENV).unwrap_or_default(),
    };
    let project_id = project_id.trim().to_owned();
    if project_id.is_empty() {
        return Err(Error::new(format!(
            "no Google Cloud project id: call project_id() or set {PROJECT_ENV}"
        )));
    }
    if project_id.contains(['/', ' ']) {
        return Err(Error::new(format!(
            "invalid Google Cloud project id {project_id:?}"
        )));
    }
    Ok(project_id)
}

/// `project` as the value of a quota project header (`x-goog-user-project`), if
/// it is a non-empty ASCII header value once trimmed.
///
/// ```
/// use tracewire_transport::google::quota_project_header;
///
/// assert_eq!(quota_project_header(" billing-1 ").unwrap(), "billing-1");
/// assert!(quota_project_header("bad\nproject").is_none());
/// assert!(quota_project_header("  ").is_none());
/// ```
pub fn quota_project_header(project: &str) -> Option<MetadataValue<Ascii>> {
    MetadataValue::try_from(project.trim())
        .ok()
        .filter(|v| !v.is_empty())
}

/// The OAuth tokens of calls to a Google API for one scope: from the provider
/// given, or from Application Default Credentials found on first use (with the
/// `quota_project_id` of their file, as Google's client libraries read it).
/// Providers cache tokens until they expire.
///
/// ```no_run
/// use tracewire_transport::google::GoogleAuth;
///
/// # async fn call() {
/// let auth = GoogleAuth::adc("https://www.googleapis.com/auth/trace.append");
/// match auth.authorization().await {
///     Ok(a) => {
///         let mut request = tonic::Request::new(());
///         request.metadata_mut().insert("authorization", a.header);
///     }
///     Err(e) if e.is_transient() => { /* try again later */ }
///     Err(e) => eprintln!("{e}"),
/// }
/// # }
/// ```
pub struct GoogleAuth {
    scope: &'static str,
    given: Option<Arc<dyn gcp_auth::TokenProvider>>,
    found: tokio::sync::OnceCell<Found>,
}

struct Found {
    provider: Arc<dyn gcp_auth::TokenProvider>,
    quota_project: Option<MetadataValue<Ascii>>,
}

impl fmt::Debug for GoogleAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoogleAuth")
            .field("scope", &self.scope)
            .field("given", &self.given.is_some())
            .field("found", &self.found.initialized())
            .finish()
    }
}

/// The metadata of an authenticated call.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Authorization {
    /// `Bearer <token>`, marked sensitive: the value of `authorization`.
    pub header: MetadataValue<Ascii>,
    /// The `quota_project_id` of the ADC credentials file, if it has one (none
    /// for a given provider).
    pub quota_project: Option<MetadataValue<Ascii>>,
}

/// Why a call could not be authenticated. [`is_transient`](Self::is_transient)
/// tells a token that could not be fetched now from credentials that are missing
/// or unusable.
#[derive(Debug)]
pub struct AuthError {
    transient: bool,
    message: String,
}

impl AuthError {
    /// Whether the token could not be fetched now (the token server did not
    /// answer, ...): worth another try. Missing credentials are not.
    pub fn is_transient(&self) -> bool {
        self.transient
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AuthError {}

impl GoogleAuth {
    /// Application Default Credentials, looked for on the first call.
    pub fn adc(scope: &'static str) -> Self {
        GoogleAuth {
            scope,
            given: None,
            found: tokio::sync::OnceCell::new(),
        }
    }

    /// Tokens from `provider` (say a `gcp_auth::CustomServiceAccount` read from
    /// a key file the application chooses).
    pub fn with_provider(scope: &'static str, provider: Arc<dyn gcp_auth::TokenProvider>) -> Self {
        GoogleAuth {
            given: Some(provider),
            ..GoogleAuth::adc(scope)
        }
    }

    /// The scope tokens are asked for.
    pub fn scope(&self) -> &'static str {
        self.scope
    }

    async fn find(&self) -> Result<Found, gcp_auth::Error> {
        Ok(match &self.given {
            Some(p) => Found {
                provider: p.clone(),
                quota_project: None,
            },
            None => Found {
                provider: gcp_auth::provider().await?,
                quota_project: adc_quota_project()
                    .as_deref()
                    .and_then(quota_project_header),
            },
        })
    }

    /// The `authorization` metadata of a call (and the ADC file's quota
    /// project). Missing credentials, and a token that is not ASCII, are not
    /// [transient](AuthError::is_transient); a token that could not be fetched
    /// is.
    pub async fn authorization(&self) -> Result<Authorization, AuthError> {
        let found = self
            .found
            .get_or_try_init(|| self.find())
            .await
            .map_err(|e| AuthError {
                transient: false,
                message: format!(
                    "no Google Cloud credentials (Application Default Credentials): {e}"
                ),
            })?;
        let token = found
            .provider
            .token(&[self.scope])
            .await
            .map_err(|e| AuthError {
                transient: true,
                message: format!("cannot get a Google Cloud access token: {e}"),
            })?;
        let mut header =
            MetadataValue::try_from(format!("Bearer {}", token.as_str())).map_err(|_| {
                AuthError {
                    transient: false,
                    message: "the access token is not ASCII".to_owned(),
                }
            })?;
        header.set_sensitive(true);
        Ok(Authorization {
            header,
            quota_project: found.quota_project.clone(),
        })
    }
}

/// `quota_project_id` from the file ADC reads: `GOOGLE_APPLICATION_CREDENTIALS`,
/// else gcloud's `application_default_credentials.json`.
fn adc_quota_project() -> Option<String> {
    let path = match std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS") {
        Some(p) if !p.is_empty() => std::path::PathBuf::from(p),
        _ => {
            let dir = if cfg!(windows) {
                std::path::PathBuf::from(std::env::var_os("APPDATA")?)
            } else {
                std::path::PathBuf::from(std::env::var_os("HOME")?).join(".config")
            };
            dir.join("gcloud/application_default_credentials.json")
        }
    };
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    Some(json.get("quota_project_id")?.as_str()?.to_owned())
}
