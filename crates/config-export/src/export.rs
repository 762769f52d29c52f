//! Export files and their import: age-encrypted by default, plaintext or
//! redacted when asked.

use std::io::{Read, Write};
use std::iter;

use age::armor::{ArmoredReader, ArmoredWriter, Format};
use age::secrecy::SecretString;

use crate::error::{ExportError, ImportError};
use crate::model::Config;
use crate::secret::Secret;

/// The scrypt work factor (log2 N) of an export unless
/// [`Export::with_work_factor`] says otherwise: about a second of work on a
/// laptop.
pub const DEFAULT_WORK_FACTOR: u8 = 18;

/// The largest scrypt work factor an import accepts unless
/// [`Import::with_max_work_factor`] says otherwise. It bounds the work a
/// hostile file can demand, and its memory: scrypt here holds 1 KiB times
/// 2^N, so 20 is 1 GiB (22 would be 4 GiB, more than a phone can give,
/// and a failed allocation aborts rather than returning an error).
pub const DEFAULT_MAX_WORK_FACTOR: u8 = 20;

/// The warning that goes with a plaintext export.
pub const PLAINTEXT_WARNING: &str = "this export is not encrypted: it holds passwords and tokens \
     in clear text; anyone who reads the file can use them";

/// Writes a configuration as an export file.
///
/// Exports are encrypted ([`Export::encrypt`]); a plaintext file is written
/// only when asked for by name ([`Export::plaintext`]), and a redacted one
/// for support ([`Export::redacted`]). Every form validates the
/// configuration first and writes nothing if it is invalid.
///
/// ```
/// use config_export::{Account, Config, Export, Import, Secret};
///
/// let mut config = Config::default();
/// let mut account = Account::new("alice", "alice", "sip:pbx.example.com");
/// account.password = Some(Secret::new("hunter2"));
/// config.accounts.push(account);
///
/// let passphrase = Secret::new("correct horse battery staple");
/// let file = Export::new(&config).with_work_factor(10).encrypt(&passphrase)?;
/// assert!(file.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
///
/// let imported = Import::new().with_passphrase(&passphrase).import(file.as_bytes())?;
/// assert_eq!(imported, config);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Export<'c> {
    config: &'c Config,
    work_factor: u8,
}

/// A plaintext export and the warning to show whoever asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlaintextExport {
    /// The XML document, secrets in clear.
    pub document: String,
    /// Tell the user this before or after writing the file.
    pub warning: &'static str,
}

impl<'c> Export<'c> {
    /// An export of `config`.
    #[must_use]
    pub fn new(config: &'c Config) -> Self {
        Self {
            config,
            work_factor: DEFAULT_WORK_FACTOR,
        }
    }

    /// Sets the scrypt work factor (log2 N, 1 to
    /// [`DEFAULT_MAX_WORK_FACTOR`]) of an encrypted export. Lower is faster
    /// and weaker; tests use a small value. Higher is refused by a default
    /// [`Import`], so the file could not be restored without knowing to
    /// raise its limit: the factor is capped there.
    #[must_use]
    pub fn with_work_factor(mut self, log_n: u8) -> Self {
        self.work_factor = log_n.clamp(1, DEFAULT_MAX_WORK_FACTOR);
        self
    }

    /// Encrypts the document with `passphrase` in the age format (scrypt
    /// recipient), ASCII-armored.
    pub fn encrypt(&self, passphrase: &Secret) -> Result<String, ExportError> {
        if passphrase.expose().is_empty() {
            return Err(ExportError::EmptyPassphrase);
        }
        let document = self.config.checked_document()?;
        let mut recipient =
            age::scrypt::Recipient::new(SecretString::from(passphrase.expose().to_owned()));
        recipient.set_work_factor(self.work_factor);
        let encryptor =
            age::Encryptor::with_recipients(iter::once(&recipient as &dyn age::Recipient))
                .map_err(|e| ExportError::Encryption(e.to_string()))?;
        let encrypt = || -> std::io::Result<Vec<u8>> {
            let armor = ArmoredWriter::wrap_output(Vec::new(), Format::AsciiArmor)?;
            let mut writer = encryptor.wrap_output(armor)?;
            writer.write_all(document.as_bytes())?;
            writer.finish()?.finish()
        };
        let bytes = encrypt().map_err(|e| ExportError::Encryption(e.to_string()))?;
        String::from_utf8(bytes).map_err(|e| ExportError::Encryption(e.to_string()))
    }

    /// The document in clear, with [`PLAINTEXT_WARNING`] for the user.
    pub fn plaintext(&self) -> Result<PlaintextExport, ExportError> {
        Ok(PlaintextExport {
            document: self.config.checked_document()?,
            warning: PLAINTEXT_WARNING,
        })
    }

    /// The document with every secret replaced by [`REDACTED`](crate::REDACTED),
    /// for a support request. Import refuses it.
    pub fn redacted(&self) -> Result<String, ExportError> {
        self.config.validate()?;
        Ok(self.config.write_xml(true))
    }
}

/// Reads an export file or a provisioning document: an age file (armored or
/// binary) is decrypted with the passphrase, plain XML is read as is. The
/// document is validated as a whole; on any error nothing is returned.
#[derive(Debug, Clone, Copy)]
pub struct Import<'p> {
    passphrase: Option<&'p Secret>,
    max_work_factor: u8,
}

impl Default for Import<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'p> Import<'p> {
    /// An import without a passphrase: it reads plain XML only.
    #[must_use]
    pub fn new() -> Self {
        Self {
            passphrase: None,
            max_work_factor: DEFAULT_MAX_WORK_FACTOR,
        }
    }

    /// The passphrase for an encrypted file.
    #[must_use]
    pub fn with_passphrase(mut self, passphrase: &'p Secret) -> Self {
        self.passphrase = Some(passphrase);
        self
    }

    /// The largest scrypt work factor accepted.
    #[must_use]
    pub fn with_max_work_factor(mut self, log_n: u8) -> Self {
        self.max_work_factor = log_n;
        self
    }

    /// Whether `input` is an encrypted export, which needs a passphrase
    /// ([`Import::with_passphrase`]); white space and a byte-order mark
    /// before it are allowed, as [`Import::import`] allows them.
    #[must_use]
    pub fn is_encrypted(input: &[u8]) -> bool {
        Self::is_age(Self::content(input))
    }

    /// Whether `body`, without leading white space, is age's format.
    fn is_age(body: &[u8]) -> bool {
        body.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----")
            || body.starts_with(b"age-encryption.org/")
    }

    /// `input` without a byte-order mark and leading white space (on
    /// either side of the mark).
    fn content(input: &[u8]) -> &[u8] {
        let trim = |b: &[u8]| -> usize {
            b.iter()
                .position(|c| !c.is_ascii_whitespace())
                .unwrap_or(b.len())
        };
        let body = &input[trim(input)..];
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        &body[trim(body)..]
    }

    /// Imports `input`.
    pub fn import(&self, input: &[u8]) -> Result<Config, ImportError> {
        let body = Self::content(input);
        let document = if Self::is_age(body) {
            self.decrypt(body)?
        } else if body.starts_with(b"<") {
            body.to_vec()
        } else {
            return Err(ImportError::UnknownFormat);
        };
        let text = std::str::from_utf8(&document).map_err(|_| ImportError::NotUtf8)?;
        Ok(Config::from_xml(text)?)
    }

    fn decrypt(&self, input: &[u8]) -> Result<Vec<u8>, ImportError> {
        let passphrase = self.passphrase.ok_or(ImportError::PassphraseRequired)?;
        let decryptor =
            age::Decryptor::new_buffered(ArmoredReader::new(input)).map_err(map_decrypt)?;
        if !decryptor.is_scrypt() {
            return Err(ImportError::NotPassphraseEncrypted);
        }
        let mut identity =
            age::scrypt::Identity::new(SecretString::from(passphrase.expose().to_owned()));
        identity.set_max_work_factor(self.max_work_factor);
        let mut reader = decryptor
            .decrypt(iter::once(&identity as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::ExcessiveWork { required, .. } => ImportError::ExcessiveWork {
                    required,
                    limit: self.max_work_factor,
                },
                other => map_decrypt(other),
            })?;
        let mut document = Vec::new();
        reader
            .read_to_end(&mut document)
            .map_err(|e| ImportError::Damaged(e.to_string()))?;
        Ok(document)
    }
}

fn map_decrypt(error: age::DecryptError) -> ImportError {
    match error {
        age::DecryptError::DecryptionFailed | age::DecryptError::NoMatchingKeys => {
            ImportError::WrongPassphrase
        }
        other => ImportError::Damaged(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Account;

    fn config() -> Config {
        let mut config = Config::default();
        let mut account = Account::new("a", "alice", "sip:pbx.example.com");
        account.password = Some(Secret::new("hunter2"));
        config.accounts.push(account);
        config
    }

    #[test]
    fn encrypted_export_is_armored_age_and_hides_the_document() {
        let passphrase = Secret::new("pass");
        let file = Export::new(&config())
            .with_work_factor(4)
            .encrypt(&passphrase)
            .unwrap();
        assert!(file.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
        assert!(!file.contains("hunter2") && !file.contains("softphone-config"));
        let back = Import::new()
            .with_passphrase(&passphrase)
            .import(file.as_bytes())
            .unwrap();
        assert_eq!(back, config());
    }

    #[test]
    fn wrong_or_missing_passphrase_is_a_typed_error() {
        let file = Export::new(&config())
            .with_work_factor(4)
            .encrypt(&Secret::new("right"))
            .unwrap();
        let wrong = Secret::new("wrong");
        assert!(matches!(
            Import::new()
                .with_passphrase(&wrong)
                .import(file.as_bytes()),
            Err(ImportError::WrongPassphrase)
        ));
        assert!(matches!(
            Import::new().import(file.as_bytes()),
            Err(ImportError::PassphraseRequired)
        ));
    }

    /// A file that asks for 4 GiB of scrypt memory (work factor 22) is
    /// refused by a default import before any work, rather than aborting
    /// the process when the allocation fails; an export cannot ask for it.
    #[test]
    fn a_file_demanding_gigabytes_is_refused_by_default() {
        let passphrase = Secret::new("p");
        let armored = Export::new(&config())
            .with_work_factor(4)
            .encrypt(&passphrase)
            .unwrap();
        let mut raw = Vec::new();
        ArmoredReader::new(armored.as_bytes())
            .read_to_end(&mut raw)
            .unwrap();
        let header_end = raw.windows(4).position(|w| w == b"\n---").unwrap();
        let header = String::from_utf8(raw[..header_end].to_vec()).unwrap();
        assert!(header.contains(" 4\n"), "{header}");
        let hostile = [
            header.replace(" 4\n", " 22\n").as_bytes(),
            &raw[header_end..],
        ]
        .concat();
        let result = Import::new().with_passphrase(&passphrase).import(&hostile);
        assert!(
            matches!(
                result,
                Err(ImportError::ExcessiveWork {
                    required: 22,
                    limit: DEFAULT_MAX_WORK_FACTOR
                })
            ),
            "{result:?}"
        );
        assert_eq!(Export::new(&config()).with_work_factor(22).work_factor, 20);
    }

    #[test]
    fn excessive_work_factor_is_refused() {
        let passphrase = Secret::new("p");
        let file = Export::new(&config())
            .with_work_factor(6)
            .encrypt(&passphrase)
            .unwrap();
        let result = Import::new()
            .with_passphrase(&passphrase)
            .with_max_work_factor(5)
            .import(file.as_bytes());
        assert!(matches!(
            result,
            Err(ImportError::ExcessiveWork {
                required: 6,
                limit: 5
            })
        ));
    }

    #[test]
    fn damaged_file_is_an_error() {
        let passphrase = Secret::new("p");
        let file = Export::new(&config())
            .with_work_factor(4)
            .encrypt(&passphrase)
            .unwrap();
        let lines: Vec<&str> = file.lines().collect();
        let truncated = format!("{}\n{}\n", lines[0], lines[1]);
        assert!(
            Import::new()
                .with_passphrase(&passphrase)
                .import(truncated.as_bytes())
                .is_err()
        );
    }

    #[test]
    fn plaintext_comes_with_a_warning() {
        let export = Export::new(&config()).plaintext().unwrap();
        assert!(export.document.contains("<password>hunter2</password>"));
        assert_eq!(export.warning, PLAINTEXT_WARNING);
        assert_eq!(
            Import::new().import(export.document.as_bytes()).unwrap(),
            config()
        );
    }

    #[test]
    fn redacted_export_cannot_be_imported() {
        let redacted = Export::new(&config()).redacted().unwrap();
        assert!(!redacted.contains("hunter2"));
        let error = Import::new().import(redacted.as_bytes()).unwrap_err();
        assert!(
            matches!(error, ImportError::Invalid(e) if e.kind == crate::ErrorKind::RedactedSecret)
        );
    }

    #[test]
    fn invalid_config_is_not_exported() {
        let mut config = config();
        config.accounts[0].registrar = "pbx.example.com".to_owned();
        assert!(matches!(
            Export::new(&config).plaintext(),
            Err(ExportError::Invalid(_))
        ));
        assert!(matches!(
            Export::new(&config).encrypt(&Secret::new("p")),
            Err(ExportError::Invalid(_))
        ));
        assert!(matches!(
            Export::new(&config).encrypt(&Secret::new("")),
            Err(ExportError::EmptyPassphrase)
        ));
    }

    #[test]
    fn encryption_is_recognised_where_import_reads_it() {
        let file = Export::new(&config()).encrypt(&Secret::new("p")).unwrap();
        let padded = format!("\n \u{feff}{file}");
        assert!(Import::is_encrypted(padded.as_bytes()));
        assert!(matches!(
            Import::new().import(padded.as_bytes()),
            Err(ImportError::PassphraseRequired)
        ));
        let plain = Export::new(&config()).plaintext().unwrap().document;
        assert!(!Import::is_encrypted(plain.as_bytes()));
        // A mark with white space after it, as editors save files.
        let padded = format!("\u{feff}\r\n  {file}");
        assert!(Import::is_encrypted(padded.as_bytes()));
        let padded = format!("\u{feff}\n{plain}");
        assert_eq!(Import::new().import(padded.as_bytes()).unwrap(), config());
    }

    #[test]
    fn an_export_needs_no_more_work_than_an_import_allows() {
        // Encrypting at 22 takes long: the factor chosen is what counts.
        let c = config();
        let export = Export::new(&c).with_work_factor(24);
        assert_eq!(export.work_factor, DEFAULT_MAX_WORK_FACTOR);
        assert_eq!(Export::new(&c).with_work_factor(0).work_factor, 1);
    }

    #[test]
    fn input_that_is_neither_age_nor_xml_is_refused() {
        assert!(matches!(
            Import::new().import(b"hello"),
            Err(ImportError::UnknownFormat)
        ));
        assert!(matches!(
            Import::new().import(b"<a"),
            Err(ImportError::Invalid(_))
        ));
        assert!(matches!(
            Import::new().import(b"<softphone-config version=\"1\">\xff</softphone-config>"),
            Err(ImportError::NotUtf8)
        ));
    }
}
