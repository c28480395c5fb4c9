//! Settings from `~/.aws` profiles, which every AWS tool reads and the `object_store` crate
//! does not: keys and session token from the credentials file, region and endpoint from the
//! config file, each only where the environment does not set it already.

use std::path::PathBuf;

use object_store::aws::AmazonS3ConfigKey;

/// Settings of the `~/.aws` profile (`AWS_PROFILE`, else `default`) that the environment
/// does not set already: keys and token from the credentials file, region and endpoint from
/// the config file, as every AWS tool reads them.
pub fn profile() -> Vec<(AmazonS3ConfigKey, String)> {
    let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
    let name = var("AWS_PROFILE").unwrap_or_else(|| "default".into());
    // HOME, else the user's home from the password database: mount(8) and systemd mount
    // units run without HOME.
    let home = std::env::home_dir().unwrap_or_default();
    let credentials = var("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".aws/credentials"));
    let config = var("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".aws/config"));
    let mut out = Vec::new();
    let config_section = match name.as_str() {
        "default" => "default".to_string(),
        other => format!("profile {other}"),
    };
    let wanted = [
        (
            &credentials,
            name.as_str(),
            "aws_access_key_id",
            "AWS_ACCESS_KEY_ID",
            AmazonS3ConfigKey::AccessKeyId,
        ),
        (
            &credentials,
            name.as_str(),
            "aws_secret_access_key",
            "AWS_SECRET_ACCESS_KEY",
            AmazonS3ConfigKey::SecretAccessKey,
        ),
        (
            &credentials,
            name.as_str(),
            "aws_session_token",
            "AWS_SESSION_TOKEN",
            AmazonS3ConfigKey::Token,
        ),
        (
            &config,
            config_section.as_str(),
            "region",
            "AWS_REGION",
            AmazonS3ConfigKey::Region,
        ),
        (
            &config,
            config_section.as_str(),
            "endpoint_url",
            "AWS_ENDPOINT_URL",
            AmazonS3ConfigKey::Endpoint,
        ),
    ];
    // Keys from a profile only when the environment gives none: a half-set pair would mix.
    let keys_in_env = var("AWS_ACCESS_KEY_ID").is_some();
    for (file, section, key, env, config_key) in wanted {
        let is_key = file == &credentials;
        if var(env).is_some() || (is_key && keys_in_env) {
            continue;
        }
        if let Some(value) = ini_value(file, section, key) {
            out.push((config_key, value));
        }
    }
    out
}

/// `key` of `[section]` in the INI file at `path`.
fn ini_value(path: &std::path::Path, section: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == section;
        } else if inside
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == key
        {
            return Some(v.trim().to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_read_as_aws_tools_read_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");
        std::fs::write(
            &file,
            "[default]\naws_access_key_id = A\n\n[lab]\naws_access_key_id=B\naws_secret_access_key = s\n",
        )
        .unwrap();
        assert_eq!(
            ini_value(&file, "lab", "aws_access_key_id").as_deref(),
            Some("B")
        );
        assert_eq!(
            ini_value(&file, "default", "aws_access_key_id").as_deref(),
            Some("A")
        );
        assert_eq!(ini_value(&file, "lab", "region"), None);
    }
}
