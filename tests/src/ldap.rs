//! A real OpenLDAP `slapd` on a free loopback port, standing in for a primary's directory:
//! an `mdb` database loaded with `slapadd`, a service account that may read it, and the
//! server's default size limit of 500 entries per search, which only a paged search gets
//! past (the account's paged total is unlimited, as directory admins set it for a sync).
//! It listens for LDAP (StartTLS offered) and LDAPS, with a certificate for 127.0.0.1 from
//! a CA made for it.

use crate::control_plane::HarnessError;
use crate::process::{Guarded, append_log, free_port, run_with_input, spawn_tied, wait_listening};
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const SUFFIX: &str = "dc=dir,dc=example";
/// The DN the operator binds as, and its password (test-only material).
pub const SERVICE_DN: &str = "cn=mx-backup,ou=services,dc=dir,dc=example";
pub const SERVICE_PASSWORD: &str = "backup-mx-reads-this";
const ROOT_DN: &str = "cn=admin,dc=dir,dc=example";
const ROOT_PASSWORD: &str = "admin-test-only";

/// `proxyAddresses` as Active Directory defines it (its OID), for entries that carry
/// `smtp:`-typed addresses; OpenLDAP's schemas have it only inside the whole AD schema.
const PROXY_ADDRESSES_SCHEMA: &str = "attributetype ( 1.2.840.113556.1.2.210 NAME 'proxyAddresses'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )
objectclass ( 1.3.6.1.4.1.32473.1.1 NAME 'mxTestMailbox' SUP top AUXILIARY
  MAY proxyAddresses )
";

/// One person in the directory.
#[derive(Clone, Debug)]
pub struct Person {
    pub uid: String,
    pub mail: Vec<String>,
    pub proxy_addresses: Vec<String>,
}

/// `count` people `u<i>`, each with the one address `u<i>@<domain>`.
pub fn numbered(count: usize, domain: &str) -> Vec<Person> {
    (0..count)
        .map(|i| Person {
            uid: format!("u{i}"),
            mail: vec![format!("u{i}@{domain}")],
            proxy_addresses: vec![],
        })
        .collect()
}

pub struct Slapd {
    pub address: SocketAddr,
    /// `ldap://127.0.0.1:port`, and `ldaps://` on another port.
    pub url: String,
    pub ldaps_url: String,
    /// The PEM certificate of the CA that signed the server's.
    pub ca_pem: String,
    dir: PathBuf,
    server: Option<Guarded>,
}

impl Slapd {
    /// Starts slapd with `people` under `ou=people`.
    pub fn start(dir: &Path, people: &[Person]) -> Result<Self, HarnessError> {
        let io = |what: &str| {
            let what = what.to_string();
            move |source| HarnessError::Io { what, source }
        };
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir.join("db")).map_err(io("creating the slapd directory"))?;
        fs::write(dir.join("proxy.schema"), PROXY_ADDRESSES_SCHEMA)
            .map_err(io("writing proxy.schema"))?;
        let config = format!(
            "include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include {dir}/proxy.schema
pidfile {dir}/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 1073741824
suffix \"{SUFFIX}\"
rootdn \"{ROOT_DN}\"
rootpw {ROOT_PASSWORD}
directory {dir}/db
TLSCACertificateFile {dir}/ca.crt
TLSCertificateFile {dir}/server.crt
TLSCertificateKeyFile {dir}/server.key
limits dn.exact=\"{SERVICE_DN}\" size.prtotal=unlimited
{ACCESS}",
            dir = dir.display(),
            ACCESS = access(),
        );
        fs::write(dir.join("slapd.conf"), config).map_err(io("writing slapd.conf"))?;
        let ca_pem = crate::tls::server_certificate(dir)?;
        let mut ldif = format!(
            "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: dir\no: Directory\n\n\
             dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n\n\
             dn: ou=services,{SUFFIX}\nobjectClass: organizationalUnit\nou: services\n\n\
             dn: {SERVICE_DN}\nobjectClass: person\nobjectClass: simpleSecurityObject\ncn: mx-backup\nsn: service\nuserPassword: {SERVICE_PASSWORD}\n\n"
        );
        for person in people {
            ldif.push_str(&person_ldif(person));
        }
        let mut slapadd = Command::new("slapadd");
        slapadd.arg("-f").arg(dir.join("slapd.conf")).arg("-q");
        run_with_input(slapadd, &ldif)?;
        let port = free_port().map_err(io("finding a free port"))?;
        let address: SocketAddr = ([127, 0, 0, 1], port).into();
        let tls_port = free_port().map_err(io("finding a free port"))?;
        let mut slapd = Self {
            address,
            url: format!("ldap://{address}"),
            ldaps_url: format!("ldaps://127.0.0.1:{tls_port}"),
            ca_pem,
            dir: dir.to_path_buf(),
            server: None,
        };
        slapd.resume()?;
        Ok(slapd)
    }

    /// Restarts the server with `rules` (slapd.conf `access` lines) before its own: as a
    /// directory admin would change what the service account may read.
    pub fn restrict(&mut self, rules: &str) -> Result<(), HarnessError> {
        let conf = self.dir.join("slapd.conf");
        let io = |source| HarnessError::Io {
            what: "rewriting slapd.conf".into(),
            source,
        };
        let config = fs::read_to_string(&conf).map_err(io)?;
        // Every access rule, the test's earlier ones too, comes after the rest.
        let base = &config[..config.find("access to").unwrap_or(config.len())];
        fs::write(&conf, format!("{base}{rules}{}", access())).map_err(io)?;
        self.pause();
        self.resume()
    }

    /// Stops the server; the directory's data stays.
    pub fn pause(&mut self) {
        self.server = None;
    }

    /// (Re)starts the server and waits until it listens.
    pub fn resume(&mut self) -> Result<(), HarnessError> {
        let log = append_log(&self.dir.join("slapd.log"))?;
        let mut command = Command::new("slapd");
        // -d keeps it in the foreground (a child this process reaps); 0: no debug output.
        command
            .arg("-d")
            .arg("0")
            .arg("-f")
            .arg(self.dir.join("slapd.conf"))
            .arg("-h")
            .arg(format!("{}/ {}/", self.url, self.ldaps_url))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = spawn_tied(command).map_err(|source| HarnessError::Io {
            what: "starting slapd".into(),
            source,
        })?;
        self.server = Some(Guarded::new("slapd", child));
        wait_listening("slapd", self.address, &self.dir.join("slapd.log"))
    }

    /// Adds a person, as the primary's administrators would.
    pub fn add(&self, person: &Person) -> Result<(), HarnessError> {
        self.modify("ldapadd", &person_ldif(person))
    }

    /// Deletes a person.
    pub fn delete(&self, uid: &str) -> Result<(), HarnessError> {
        self.modify(
            "ldapmodify",
            &format!("dn: uid={uid},ou=people,{SUFFIX}\nchangetype: delete\n\n"),
        )
    }

    fn modify(&self, tool: &str, ldif: &str) -> Result<(), HarnessError> {
        let mut command = Command::new(tool);
        command.args(["-x", "-H", &self.url, "-D", ROOT_DN, "-w", ROOT_PASSWORD]);
        run_with_input(command, ldif).map(drop)
    }
}

/// The service account may read everything but passwords.
fn access() -> String {
    format!(
        "access to attrs=userPassword by anonymous auth by * none\naccess to * by dn.exact=\"{SERVICE_DN}\" read by * none\n"
    )
}

fn person_ldif(person: &Person) -> String {
    let mut ldif = format!(
        "dn: uid={uid},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nobjectClass: mxTestMailbox\nuid: {uid}\ncn: {uid}\nsn: {uid}\n",
        uid = person.uid
    );
    for mail in &person.mail {
        ldif.push_str(&format!("mail: {mail}\n"));
    }
    for proxy in &person.proxy_addresses {
        ldif.push_str(&format!("proxyAddresses: {proxy}\n"));
    }
    ldif.push('\n');
    ldif
}
