//! Error conditions of RFC 6120: stream errors (§4.9) end the stream, stanza
//! errors (§8.3) answer one stanza. This file owns their names, default
//! types and XML form; it never decides *when* an error is sent.

use crate::xml::build::Element;
use crate::xml::Esc;
use std::fmt::Write;

pub const NS_STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
pub const NS_STANZA_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

/// RFC 6120 §4.9.3 stream error conditions hearth emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamCondition {
    BadFormat,
    Conflict,
    ConnectionTimeout,
    HostUnknown,
    ImproperAddressing,
    InternalServerError,
    InvalidFrom,
    InvalidNamespace,
    NotAuthorized,
    NotWellFormed,
    PolicyViolation,
    ResourceConstraint,
    RestrictedXml,
    SystemShutdown,
    UndefinedCondition,
    UnsupportedEncoding,
    UnsupportedStanzaType,
    UnsupportedVersion,
}

impl StreamCondition {
    pub fn name(self) -> &'static str {
        use StreamCondition::*;
        match self {
            BadFormat => "bad-format",
            Conflict => "conflict",
            ConnectionTimeout => "connection-timeout",
            HostUnknown => "host-unknown",
            ImproperAddressing => "improper-addressing",
            InternalServerError => "internal-server-error",
            InvalidFrom => "invalid-from",
            InvalidNamespace => "invalid-namespace",
            NotAuthorized => "not-authorized",
            NotWellFormed => "not-well-formed",
            PolicyViolation => "policy-violation",
            ResourceConstraint => "resource-constraint",
            RestrictedXml => "restricted-xml",
            SystemShutdown => "system-shutdown",
            UndefinedCondition => "undefined-condition",
            UnsupportedEncoding => "unsupported-encoding",
            UnsupportedStanzaType => "unsupported-stanza-type",
            UnsupportedVersion => "unsupported-version",
        }
    }

    /// `<stream:error>` followed by the stream close; the caller has already
    /// sent its stream header.
    pub fn write_close(self, text: Option<&str>, out: &mut String) {
        let _ = write!(
            out,
            "<stream:error><{} xmlns='{NS_STREAM_ERRORS}'/>",
            self.name()
        );
        if let Some(text) = text {
            let _ = write!(
                out,
                "<text xmlns='{NS_STREAM_ERRORS}' xml:lang='en'>{}</text>",
                Esc(text)
            );
        }
        out.push_str("</stream:error></stream:stream>");
    }
}

/// RFC 6120 §8.3.2 error types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    Auth,
    Cancel,
    Continue,
    Modify,
    Wait,
}

impl ErrorType {
    pub fn name(self) -> &'static str {
        match self {
            ErrorType::Auth => "auth",
            ErrorType::Cancel => "cancel",
            ErrorType::Continue => "continue",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
        }
    }
}

/// RFC 6120 §8.3.3 stanza error conditions hearth emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StanzaCondition {
    BadRequest,
    Conflict,
    FeatureNotImplemented,
    Forbidden,
    ItemNotFound,
    JidMalformed,
    NotAcceptable,
    NotAllowed,
    NotAuthorized,
    PolicyViolation,
    RecipientUnavailable,
    RegistrationRequired,
    RemoteServerNotFound,
    RemoteServerTimeout,
    ResourceConstraint,
    ServiceUnavailable,
    UnexpectedRequest,
}

impl StanzaCondition {
    pub fn name(self) -> &'static str {
        use StanzaCondition::*;
        match self {
            BadRequest => "bad-request",
            Conflict => "conflict",
            FeatureNotImplemented => "feature-not-implemented",
            Forbidden => "forbidden",
            ItemNotFound => "item-not-found",
            JidMalformed => "jid-malformed",
            NotAcceptable => "not-acceptable",
            NotAllowed => "not-allowed",
            NotAuthorized => "not-authorized",
            PolicyViolation => "policy-violation",
            RecipientUnavailable => "recipient-unavailable",
            RegistrationRequired => "registration-required",
            RemoteServerNotFound => "remote-server-not-found",
            RemoteServerTimeout => "remote-server-timeout",
            ResourceConstraint => "resource-constraint",
            ServiceUnavailable => "service-unavailable",
            UnexpectedRequest => "unexpected-request",
        }
    }

    /// The type RFC 6120 §8.3.3 gives as usual for the condition.
    pub fn default_type(self) -> ErrorType {
        use StanzaCondition::*;
        match self {
            BadRequest | JidMalformed | NotAcceptable | PolicyViolation => ErrorType::Modify,
            NotAuthorized | Forbidden | RegistrationRequired => ErrorType::Auth,
            RecipientUnavailable | RemoteServerTimeout | ResourceConstraint | UnexpectedRequest => {
                ErrorType::Wait
            }
            _ => ErrorType::Cancel,
        }
    }
}

/// A stanza error ready to be written: condition, type and optional text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StanzaError<'a> {
    pub condition: StanzaCondition,
    pub kind: ErrorType,
    pub text: Option<&'a str>,
    /// An application-specific condition (RFC 6120 §8.3.4): element name and namespace.
    pub app: Option<(&'a str, &'a str)>,
}

impl<'a> StanzaError<'a> {
    pub fn new(condition: StanzaCondition) -> Self {
        StanzaError {
            condition,
            kind: condition.default_type(),
            text: None,
            app: None,
        }
    }

    pub fn with_app(mut self, name: &'a str, ns: &'a str) -> Self {
        self.app = Some((name, ns));
        self
    }

    pub fn with_text(mut self, text: &'a str) -> Self {
        self.text = Some(text);
        self
    }

    /// The `<error>` child element.
    pub fn write(&self, out: &mut String) {
        Element::new("error")
            .attr("type", self.kind.name())
            .children(out, |out| {
                Element::new(self.condition.name())
                    .ns(NS_STANZA_ERRORS)
                    .empty(out);
                if let Some(text) = self.text {
                    Element::new("text")
                        .ns(NS_STANZA_ERRORS)
                        .attr("xml:lang", "en")
                        .text(out, text);
                }
                if let Some((name, ns)) = self.app {
                    Element::new(name).ns(ns).empty(out);
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_error_names_the_condition_and_closes() {
        let mut out = String::new();
        StreamCondition::PolicyViolation.write_close(Some("too <big>"), &mut out);
        assert_eq!(
            out,
            "<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-streams' xml:lang='en'>too &lt;big&gt;</text>\
             </stream:error></stream:stream>"
        );
    }

    #[test]
    fn stanza_error_uses_default_type() {
        let mut out = String::new();
        StanzaError::new(StanzaCondition::ServiceUnavailable).write(&mut out);
        assert_eq!(
            out,
            "<error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
        );
        assert_eq!(
            StanzaCondition::BadRequest.default_type(),
            ErrorType::Modify
        );
    }
}
