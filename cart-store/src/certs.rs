//! [`write_dev_certs`]: the development CA and per-region certificates of
//! `cart-store certs`.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// Most regions in one call.
pub const REGIONS_MAX: usize = 64;

/// Why certificates could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertsError {
    /// A region name is not usable as a DNS name.
    #[error(
        "region {0:?} is not a valid DNS name: use labels of 1-63 characters of \
         [A-Za-z0-9-] joined by dots, e.g. virginia,frankfurt,tokyo"
    )]
    BadRegion(String),
    /// No regions, too many, or a duplicate.
    #[error("{0}")]
    Regions(String),
    /// Certificate generation failed.
    #[error("generating certificates: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// The file at `path` could not be written.
    #[error("cannot write {path}: {source}")]
    #[allow(missing_docs)]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A DNS name: labels of 1-63 characters of `[A-Za-z0-9-]`, not starting or ending with
/// `-`, joined by `.`; at most 253 characters.
pub fn valid_region(r: &str) -> bool {
    r.len() <= 253
        && r.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Writes `ca.pem`, `ca.key` and, per region, `<region>.pem` and `<region>.key` (DNS SAN =
/// the region name, usable as both TLS server and client) into `out`, creating it.
/// Returns the files written.
pub fn write_dev_certs(out: &Path, regions: &[String]) -> Result<Vec<PathBuf>, CertsError> {
    if regions.is_empty() || regions.len() > REGIONS_MAX {
        return Err(CertsError::Regions(format!(
            "give 1..={REGIONS_MAX} regions, e.g. --regions virginia,frankfurt,tokyo"
        )));
    }
    for (i, r) in regions.iter().enumerate() {
        if !valid_region(r) {
            return Err(CertsError::BadRegion(r.clone()));
        }
        if regions[..i].contains(r) {
            return Err(CertsError::Regions(format!("region {r:?} is listed twice")));
        }
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| CertsError::Io { path, source }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let mut written = Vec::new();
    let mut write = |name: String, text: String| -> Result<(), CertsError> {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(io(&path))?;
        written.push(path);
        Ok(())
    };

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Meridian development CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    write("ca.pem".into(), ca_cert.pem())?;
    write("ca.key".into(), ca_key.serialize_pem())?;
    let issuer = Issuer::from_params(&ca, &ca_key);
    for region in regions {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(vec![region.clone()])?;
        p.distinguished_name
            .push(DnType::CommonName, region.as_str());
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = p.signed_by(&key, &issuer)?;
        write(format!("{region}.pem"), cert.pem())?;
        write(format!("{region}.key"), key.serialize_pem())?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_ca_and_region_files() {
        let dir = tempfile::tempdir().unwrap();
        let regions: Vec<String> = ["virginia", "tokyo"].map(String::from).to_vec();
        let files = write_dev_certs(dir.path(), &regions).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "ca.pem",
                "ca.key",
                "virginia.pem",
                "virginia.key",
                "tokyo.pem",
                "tokyo.key"
            ]
        );
        let pem = std::fs::read_to_string(dir.path().join("tokyo.pem")).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let key = std::fs::read_to_string(dir.path().join("tokyo.key")).unwrap();
        assert!(key.contains("PRIVATE KEY"));
    }

    #[test]
    fn bad_regions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = write_dev_certs(dir.path(), &["Bad Name".into()]).unwrap_err();
        assert!(e.to_string().contains("\"Bad Name\""), "{e}");
        for bad in ["-a", "a-", "a..b", "a_b", ""] {
            assert!(write_dev_certs(dir.path(), &[bad.into()]).is_err(), "{bad}");
        }
        let ok: Vec<String> = ["us-east-1", "Virginia", "eu.west"]
            .map(String::from)
            .to_vec();
        write_dev_certs(dir.path(), &ok).unwrap();
        let e = write_dev_certs(dir.path(), &["a".into(), "a".into()]).unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        assert!(write_dev_certs(dir.path(), &[]).is_err());
    }
}
