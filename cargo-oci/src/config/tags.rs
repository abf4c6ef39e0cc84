//! The tags of an image and of its debug variant: the configured ones and `--tag` (placeholders
//! expanded, each checked, duplicates dropped), whether the content tag is added
//! (`content-tag`), and the debug variant's own tags (`debug = { tags = [...] }`).

use cargo_metadata::Package;

use crate::config::raw::RawOci;
use crate::config::validate::{expand_tag, invalid, Invalid};
use crate::oci::reference::validate_tag;
use crate::util::error::UsageError;

const TAG_HELP: &str = "tags are up to 128 of [A-Za-z0-9_.-], not starting with `.` or `-`; {version}, {package} and {bin} are expanded";

/// The image's tags (the configured ones, default `latest`, then `--tag`) and whether the
/// content tag is added. `err` places an error at a key of the metadata; a bad `--tag` is the
/// command line's error and is told as one.
pub fn image_tags(
    raw: &RawOci,
    cli_tags: &[String],
    package: &Package,
    bin: &str,
    err: &dyn Fn(&str, Invalid) -> UsageError,
) -> Result<(Vec<String>, bool), UsageError> {
    let mut tags: Vec<String> = Vec::new();
    for t in raw.tags.clone().unwrap_or_else(|| vec!["latest".into()]) {
        let t = expand_tag(&t, package, bin).map_err(|m| err("tags", invalid(m, TAG_HELP)))?;
        validate_tag(&t).map_err(|m| err("tags", invalid(m, TAG_HELP)))?;
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    for t in cli_tags {
        let t = expand_tag(t, package, bin)
            .and_then(|t| validate_tag(&t).map(|_| t))
            .map_err(|m| UsageError::new(format!("--tag: {m}")).hint(TAG_HELP))?;
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    let content_tag = raw.content_tag.unwrap_or(true);
    if tags.is_empty() && !content_tag {
        return Err(err(
            "tags",
            invalid(
                "the image would have no tag: `tags` is empty and `content-tag = false`",
                "name a tag, such as tags = [\"latest\"], or drop `content-tag = false`",
            ),
        ));
    }
    Ok((tags, content_tag))
}

/// The debug variant's tags as configured (`debug.tags`): expanded, checked, none shared with
/// the standard image's `tags`, at least one.
pub fn debug_tags(
    raw_tags: &[String],
    tags: &[String],
    package: &Package,
    bin: &str,
    err: &dyn Fn(&str, Invalid) -> UsageError,
) -> Result<Vec<String>, UsageError> {
    let mut out: Vec<String> = Vec::new();
    for t in raw_tags {
        let t = expand_tag(t, package, bin).map_err(|m| err("debug.tags", invalid(m, TAG_HELP)))?;
        validate_tag(&t).map_err(|m| err("debug.tags", invalid(m, TAG_HELP)))?;
        if tags.contains(&t) {
            return Err(err(
                "debug.tags",
                invalid(
                    format!("`{t}` is also a tag of the standard image"),
                    "give the debug variant tags of its own, such as \"debug\"",
                ),
            ));
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    if out.is_empty() {
        return Err(err(
            "debug.tags",
            invalid(
                "the debug variant would have no tag",
                "name one, such as tags = [\"debug\"], or leave `tags` out for `<tag>-debug`",
            ),
        ));
    }
    Ok(out)
}
