//! Writes a `clouds.yaml` so that `openstack --os-cloud snapstack …` works
//! right away: always in the data directory, and in
//! `~/.config/openstack/clouds.yaml` unless that file exists and was not
//! written by Snapstack (then the user is told how to point at ours).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const MARKER: &str = "# Written by snapstack serve";

fn yaml_string(s: &str) -> String {
    // A double-quoted YAML scalar; JSON string escaping is valid there.
    format!("{s:?}").replace("\\'", "'")
}

fn content(url: &str, user: &str, project: &str, password: &str) -> String {
    format!(
        "{MARKER}: the admin of the local Snapstack cloud.\n\
         clouds:\n  snapstack:\n    auth:\n      auth_url: {auth}\n      username: {user}\n      password: {password}\n      \
         project_name: {project}\n      user_domain_name: Default\n      project_domain_name: Default\n    \
         region_name: RegionOne\n    interface: public\n    identity_api_version: 3\n",
        auth = yaml_string(&format!("{url}/identity/v3")),
        user = yaml_string(user),
        password = yaml_string(password),
        project = yaml_string(project),
    )
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

fn user_config_path() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/openstack/clouds.yaml"))
}

/// Writes the files; returns lines to tell the user.
pub fn write(
    data_dir: &Path,
    url: &str,
    user: &str,
    project: &str,
    password: &str,
) -> anyhow::Result<Vec<String>> {
    let text = content(url, user, project, password);
    let ours = data_dir.join("clouds.yaml");
    write_private(&ours, &text)?;
    let mut lines = vec![format!("Wrote {}", ours.display())];
    match user_config_path() {
        Some(path) => {
            let existing = std::fs::read_to_string(&path).ok();
            if existing.as_deref().is_none_or(|t| t.starts_with(MARKER)) {
                write_private(&path, &text)?;
                lines.push(format!(
                    "Wrote {} (use: openstack --os-cloud snapstack …)",
                    path.display()
                ));
            } else {
                lines.push(format!(
                    "{} exists and is not Snapstack's; use: export OS_CLIENT_CONFIG_FILE={}",
                    path.display(),
                    ours.display()
                ));
            }
        }
        None => lines.push(format!(
            "use: export OS_CLIENT_CONFIG_FILE={}",
            ours.display()
        )),
    }
    Ok(lines)
}
