//! "Build, then these sinks": every command that makes an image reads the configuration, checks
//! each destination before any build work, builds the images into the store, then hands them to
//! each sink in turn.

use anyhow::Result;

use crate::build::pipeline::{self, BuildRequest, Built, Configured};
use crate::sink::{Delivered, Sink};
use crate::util::reporter::Reporter;

/// A build and what each sink did with it, in the sinks' order.
pub struct Made {
    pub built: Built,
    pub delivered: Vec<(&'static str, Delivered)>,
}

/// Builds the image and delivers it to the sinks that `sinks` chooses from the configuration.
pub fn build_and_deliver(
    req: &BuildRequest,
    sinks: impl FnOnce(&Configured) -> Result<Vec<Box<dyn Sink>>>,
    report: &Reporter,
) -> Result<Made> {
    let conf = pipeline::configure(req)?;
    let sinks = sinks(&conf)?;
    for sink in &sinks {
        sink.check()?;
    }
    let built = pipeline::build(req, conf, report)?;
    let picked = built.images();
    let picked: Vec<&crate::oci::image::Image> = picked.iter().collect();
    let indexes = built.indexes();
    let mut delivered = Vec::new();
    for sink in &sinks {
        let done = if indexes.is_empty() {
            sink.deliver(&built.store, &picked, report)?
        } else {
            sink.deliver_index(&built.store, &indexes, &picked, report)?
        };
        delivered.push((sink.kind(), done));
    }
    Ok(Made { built, delivered })
}
