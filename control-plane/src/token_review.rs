//! Kubernetes service-account tokens: an injected proxy presents the token the kubelet
//! projected into its pod for Bulwark's audience, and the API server says, through a
//! TokenReview, whose it is. Only `system:serviceaccount:<namespace>:<name>` users, for
//! this audience, are granted; the identity is that namespace and service account.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};

/// The audience injection asks the kubelet to project tokens for. A token made for the
/// API server (or anyone else) is refused: it proves nothing to the mesh.
pub const AUDIENCE: &str = "bulwark.dev";

/// Checks tokens with the API server.
#[derive(Clone)]
pub struct TokenReviewer {
    client: kube::Client,
    audience: String,
}

impl std::fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewer")
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReviewError {
    /// The API server could not be asked.
    #[error("the TokenReview failed: {0}")]
    Api(String),
    /// It does not authenticate the token.
    #[error("the API server does not authenticate this token: {0}")]
    Unauthenticated(String),
    /// It is valid, but not for Bulwark.
    #[error("the token is not for the audience {0:?}")]
    Audience(String),
    /// It belongs to a user that is not a service account.
    #[error("the token is {0:?}'s, not a service account's")]
    NotServiceAccount(String),
}

impl TokenReviewer {
    /// Reviews with `client` for `audience`.
    pub fn new(client: kube::Client, audience: impl Into<String>) -> Self {
        Self {
            client,
            audience: audience.into(),
        }
    }

    /// The namespace and service account `token` belongs to.
    pub async fn review(&self, token: &str) -> Result<(String, String), ReviewError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.trim().to_string()),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| ReviewError::Api(e.to_string()))?;
        judge(answer, &self.audience)
    }
}

/// The identity a TokenReview's answer grants, if any.
fn judge(answer: TokenReview, audience: &str) -> Result<(String, String), ReviewError> {
    let status = answer.status.unwrap_or_default();
    if status.authenticated != Some(true) {
        return Err(ReviewError::Unauthenticated(
            status.error.unwrap_or_else(|| "no reason given".into()),
        ));
    }
    // Asked with spec.audiences, the API server answers with the ones the token is for; a
    // server that ignores audiences answers none, and that proves nothing either.
    if !status
        .audiences
        .unwrap_or_default()
        .iter()
        .any(|a| a == audience)
    {
        return Err(ReviewError::Audience(audience.to_string()));
    }
    let user = status.user.and_then(|u| u.username).unwrap_or_default();
    match user
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
    {
        Some((ns, sa)) if !ns.is_empty() && !sa.is_empty() && !sa.contains(':') => {
            Ok((ns.to_string(), sa.to_string()))
        }
        _ => Err(ReviewError::NotServiceAccount(user)),
    }
}

#[cfg(test)]
mod tests;
