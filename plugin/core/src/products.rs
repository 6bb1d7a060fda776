//! Product mappings: what a Product Code stands for at the license server ([`Product`]): QLM's
//! arguments, from its `salesforce_pid_<ProductCode>` argument strings or the structured form of
//! the configuration ([`QlmArgs`]), or a Keygen policy ([`KeygenTerms`]). Used by `config` (to
//! validate them) and `license` (to send them); depends on neither.

/// One mapped Product Code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    /// `"renewal": true`: a line of this product renews the key of the line it names
    /// (`lifecycle.renewal_field`) instead of creating one.
    pub renewal: bool,
    pub terms: Terms,
}

/// The product's terms, in the configured license server's own words (the configuration maps
/// every product to the server `license_server.kind` names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Terms {
    Qlm(QlmArgs),
    Keygen(KeygenTerms),
}

/// A Keygen product: the policy its licenses are created under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeygenTerms {
    /// The policy's id.
    pub policy: String,
    /// `"seats": "quantity"`: the license's `maxMachines` is the line's Quantity (and a reduction
    /// lowers it); otherwise the policy's own limits apply.
    pub seats_from_quantity: bool,
}

impl Product {
    pub fn qlm(&self) -> Option<&QlmArgs> {
        match &self.terms {
            Terms::Qlm(a) => Some(a),
            Terms::Keygen(_) => None,
        }
    }

    pub fn keygen(&self) -> Option<&KeygenTerms> {
        match &self.terms {
            Terms::Keygen(k) => Some(k),
            Terms::Qlm(_) => None,
        }
    }

    /// Does the line's Quantity set the license's seats (so a reduction changes them)? QLM's
    /// `is_quantity` always does; a Keygen policy only with `seats: "quantity"`.
    pub fn seats_follow_quantity(&self) -> bool {
        match &self.terms {
            Terms::Qlm(_) => true,
            Terms::Keygen(k) => k.seats_from_quantity,
        }
    }

    /// The state field's text for a renewed line: what the renewal added.
    pub fn renewal_label(&self) -> String {
        let qlm = self.qlm();
        match (
            qlm.and_then(|a| a.get("is_expduration")),
            qlm.and_then(|a| a.get("is_expdate")),
        ) {
            (Some(d), _) => format!("Renewed +{d} d"),
            (None, Some(date)) => format!("Renewed to {date}"),
            // Keygen: the policy's duration.
            (None, None) => "Renewed".to_owned(),
        }
    }
}

/// Arguments we set ourselves; a product mapping may not override them.
const RESERVED: &[&str] = &[
    "is_user",
    "is_pwd",
    "is_quantity",
    "is_orderid",
    // The line reference, sent with `is_orderid` (config `license_server.line_reference`).
    "is_userdata1",
    "is_vendor",
    "is_affiliateid",
    "is_email",
    "is_fullname",
    "is_company",
];
const REQUIRED: &[&str] = &["is_productid", "is_majorversion", "is_minorversion"];

/// QLM's arguments for one product, in order, already decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QlmArgs {
    args: Vec<(String, String)>,
}

impl QlmArgs {
    /// QLM's server-property value, verbatim: `&is_productid=1&is_majorversion=1&…&is_emailtemplate=1. New Order`.
    /// Parsed the way the license server parses a query string, so `%20`/`+` and literal spaces
    /// all mean a space, and re-encoded correctly when sent.
    pub fn from_qlm(s: &str) -> Result<QlmArgs, String> {
        let args: Vec<(String, String)> = form_urlencoded::parse(s.trim().as_bytes())
            .filter(|(k, _)| !k.is_empty())
            .map(|(k, v)| (k.trim().to_owned(), v.into_owned()))
            .collect();
        QlmArgs::checked(args)
    }

    pub fn from_structured(
        productid: u64,
        majorversion: u64,
        minorversion: u64,
        productname: Option<String>,
        emailtemplate: Option<String>,
        extra: Vec<(String, String)>,
    ) -> Result<QlmArgs, String> {
        let mut args = vec![
            ("is_productid".to_owned(), productid.to_string()),
            ("is_majorversion".to_owned(), majorversion.to_string()),
            ("is_minorversion".to_owned(), minorversion.to_string()),
        ];
        if let Some(n) = productname {
            args.push(("is_productname".to_owned(), n));
        }
        if let Some(t) = emailtemplate {
            args.push(("is_emailtemplate".to_owned(), t));
        }
        args.extend(extra);
        QlmArgs::checked(args)
    }

    fn checked(args: Vec<(String, String)>) -> Result<QlmArgs, String> {
        for (k, _) in &args {
            if !k.starts_with("is_") || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!(
                    "argument '{k}' is not a license-server argument (is_…)"
                ));
            }
            // QLM reads argument names whatever their case (ASP.NET's `Request[name]`).
            if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(k)) {
                return Err(format!(
                    "argument '{k}' is set by keygate and may not be mapped"
                ));
            }
            if args.iter().filter(|(o, _)| o == k).count() > 1 {
                return Err(format!("argument '{k}' appears twice"));
            }
        }
        for r in REQUIRED {
            match args.iter().find(|(k, _)| k == r) {
                Some((_, v)) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {}
                Some(_) => return Err(format!("{r} must be a number")),
                None => return Err(format!("{r} is required")),
            }
        }
        Ok(QlmArgs { args })
    }

    pub fn args(&self) -> &[(String, String)] {
        &self.args
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}
