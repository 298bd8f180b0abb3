//! Wrapping an existing `generate` call, tower-style: a [`GuardLayer`] turns any generator into a [`Guarded`] one
//! whose answers have been through the [`Protector`]. The generator itself is not touched.

use std::sync::Arc;

use crate::error::Error;
use crate::image::Image;
use crate::protector::{GuardOutcome, Protector};

/// A multimodal generate call: an optional image and a prompt in, a response out.
pub trait Generate {
    /// The generator's own error.
    type Error;
    /// Produces the model's response.
    fn generate(&self, image: Option<&Image>, prompt: &str) -> Result<String, Self::Error>;
}

impl<F, E> Generate for F
where
    F: Fn(Option<&Image>, &str) -> Result<String, E>,
{
    type Error = E;
    fn generate(&self, image: Option<&Image>, prompt: &str) -> Result<String, E> {
        self(image, prompt)
    }
}

/// Error of a guarded call: the generator's, or the guard's (bad input).
#[derive(Debug, thiserror::Error)]
pub enum GuardedError<E> {
    /// The wrapped generator failed; nothing was guarded.
    #[error("generate failed: {0}")]
    Generate(E),
    /// The guard refused the input.
    #[error(transparent)]
    Guard(#[from] Error),
}

/// Makes [`Guarded`] generators that share one protector.
#[derive(Debug, Clone)]
pub struct GuardLayer {
    protector: Arc<Protector>,
}

impl GuardLayer {
    /// A layer around `protector`.
    pub fn new(protector: Arc<Protector>) -> Self {
        GuardLayer { protector }
    }

    /// Wraps `inner`.
    pub fn layer<G>(&self, inner: G) -> Guarded<G> {
        Guarded {
            inner,
            protector: Arc::clone(&self.protector),
        }
    }
}

/// A generator whose every response goes through the protector.
///
/// ```no_run
/// use std::sync::Arc;
/// use mllm_protector::{GuardLayer, Image, Protector};
///
/// // Your existing call, unchanged:
/// let llava = |_image: Option<&Image>, prompt: &str| -> Result<String, std::io::Error> {
///     Ok(format!("(the model's answer to {prompt})"))
/// };
/// let guarded = GuardLayer::new(Arc::new(Protector::new()?)).layer(llava);
/// let outcome = guarded.generate(None, "Describe this picture")?;
/// println!("{}", outcome.response);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Guarded<G> {
    inner: G,
    protector: Arc<Protector>,
}

impl<G: Generate> Guarded<G> {
    /// Calls the wrapped generator, then guards its response.
    pub fn generate(&self, image: Option<&Image>, prompt: &str) -> Result<GuardOutcome, GuardedError<G::Error>> {
        let response = self.inner.generate(image, prompt).map_err(GuardedError::Generate)?;
        Ok(self.protector.guard(image, prompt, &response)?)
    }

    /// The wrapped generator.
    pub fn inner(&self) -> &G {
        &self.inner
    }
}
