//! Certificates for the test servers that speak TLS (slapd, nginx): a CA made for one
//! test, and a server certificate for 127.0.0.1 it signs, with Debian's openssl.

use crate::control_plane::HarnessError;
use crate::process::run_with_input;
use std::fs;
use std::path::Path;
use std::process::Command;

/// `server.crt` and `server.key` in `dir` for 127.0.0.1, signed by a CA made for it
/// (`ca.crt`); the CA certificate's PEM.
pub fn server_certificate(dir: &Path) -> Result<String, HarnessError> {
    let ca_pem = certificate_authority(dir, "ca")?;
    new_key(dir, "server", &["-subj", "/CN=127.0.0.1"])?;
    fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|source| HarnessError::Io {
        what: "writing server.ext".into(),
        source,
    })?;
    let (csr, ca, ca_key) = (
        path(dir, "server.csr"),
        path(dir, "ca.crt"),
        path(dir, "ca.key"),
    );
    let (ext, crt) = (path(dir, "server.ext"), path(dir, "server.crt"));
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &ext,
        "-out",
        &crt,
    ])?;
    Ok(ca_pem)
}

/// A CA (`<name>.crt`, `<name>.key` in `dir`) made for one test; its certificate's PEM.
pub fn certificate_authority(dir: &Path, name: &str) -> Result<String, HarnessError> {
    let subject = format!("/CN=mx-operator test {name}");
    new_key(
        dir,
        name,
        &[
            "-x509",
            "-days",
            "2",
            "-subj",
            &subject,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    )?;
    fs::read_to_string(dir.join(format!("{name}.crt"))).map_err(|source| HarnessError::Io {
        what: format!("reading {name}.crt"),
        source,
    })
}

/// An EC key `<name>.key`, and with it a certificate request `<name>.csr`, or with
/// `-x509` among `args` a self-signed `<name>.crt`.
fn new_key(dir: &Path, name: &str, args: &[&str]) -> Result<(), HarnessError> {
    let key = path(dir, &format!("{name}.key"));
    let out = match args.contains(&"-x509") {
        true => path(dir, &format!("{name}.crt")),
        false => path(dir, &format!("{name}.csr")),
    };
    let mut all = vec![
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &out,
    ];
    all.extend_from_slice(args);
    openssl(&all)
}

fn path(dir: &Path, file: &str) -> String {
    dir.join(file).display().to_string()
}

fn openssl(args: &[&str]) -> Result<(), HarnessError> {
    let mut command = Command::new("openssl");
    command.args(args);
    run_with_input(command, "").map(drop)
}
