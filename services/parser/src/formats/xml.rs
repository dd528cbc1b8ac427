//! `xml`: a streaming quick-xml reader with namespaces. A record is the root element
//! (one record per document) or each element at `record_element`; fields are element
//! paths or attributes below it. Only the five predefined entities and character
//! references are expanded (no DTD entities: no billion laughs).
//!
//! Events borrow from the entry's text, so a record's size (from its start tag to its
//! end tag) is known before anything of it is copied: once a record passes
//! `max_record_bytes`, its values are dropped and its events only tracked, not
//! decoded, to its end tag; it is reported as `record_too_large` and the next record
//! is read. When the record is the whole document, that is the entry's one reject.

use std::collections::BTreeMap;

use medlake_common::dataset::XmlOptions;
use quick_xml::NsReader;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;

use super::{EntryError, Next, Records, too_large};
use crate::error::ErrorCode;

/// One step of a path: namespace URI (`None` = any) and local name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    ns: Option<String>,
    local: String,
}

impl Step {
    fn parse(text: &str, namespaces: &BTreeMap<String, String>) -> Step {
        match text.split_once(':') {
            Some((prefix, local)) => Step {
                ns: namespaces.get(prefix).cloned(),
                local: local.to_string(),
            },
            None => Step {
                ns: None,
                local: text.to_string(),
            },
        }
    }

    fn matches(&self, el: &Step) -> bool {
        self.local == el.local && self.ns.as_ref().is_none_or(|ns| el.ns.as_ref() == Some(ns))
    }
}

/// A compiled path: element steps, and the attribute at the end if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct XmlPath {
    elements: Vec<Step>,
    attribute: Option<Step>,
}

impl XmlPath {
    pub fn parse(path: &str, namespaces: &BTreeMap<String, String>) -> XmlPath {
        let mut elements = Vec::new();
        let mut attribute = None;
        for step in path.split('/').filter(|s| !s.is_empty()) {
            match step.strip_prefix('@') {
                Some(a) => attribute = Some(Step::parse(a, namespaces)),
                None => elements.push(Step::parse(step, namespaces)),
            }
        }
        XmlPath {
            elements,
            attribute,
        }
    }

    fn is_at(&self, rel: &[Step]) -> bool {
        self.elements.len() == rel.len() && self.elements.iter().zip(rel).all(|(p, e)| p.matches(e))
    }

    /// Whether `root` (one element) is this single-step path.
    pub fn matches_root(&self, ns: Option<&str>, local: &str) -> bool {
        let el = Step {
            ns: ns.map(str::to_string),
            local: local.to_string(),
        };
        self.elements.len() == 1 && self.elements[0].matches(&el)
    }
}

fn element(reader: &NsReader<&[u8]>, start: &BytesStart) -> Step {
    let (ns, local) = reader.resolver().resolve_element(start.name());
    let ns = match ns {
        ResolveResult::Bound(ns) => Some(ns.0.to_string()),
        _ => None,
    };
    Step {
        ns,
        local: <str as ToString>::to_string(local.as_ref()),
    }
}

/// The root element (namespace URI, local name) of a document, for routing.
pub(crate) fn root_of(text: &str) -> Option<(Option<String>, String)> {
    let mut reader = NsReader::from_str(text);
    loop {
        match reader.read_event() {
            Ok(Event::Start(s) | Event::Empty(s)) => {
                let step = element(&reader, &s);
                return Some((step.ns, step.local));
            }
            Ok(Event::Eof) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

pub(crate) struct XmlReader<'t> {
    reader: NsReader<&'t [u8]>,
    record: XmlPath,
    fields: Vec<Option<XmlPath>>,
    max_depth: usize,
    /// Open elements from the root.
    stack: Vec<Step>,
    /// Stack length at the record element, while inside a record.
    record_depth: Option<usize>,
    /// Fields already complete in this record (first occurrence wins).
    done: Vec<bool>,
    finished: bool,
    max_record_bytes: usize,
    /// Where the current record's start tag begins.
    record_start: u64,
    /// The current record passed the limit: its events are only tracked to its end.
    skipping: bool,
}

fn malformed(e: impl std::fmt::Display, pos: u64) -> EntryError {
    // quick-xml's messages name tags and positions, not text content.
    EntryError::new(
        ErrorCode::MalformedXml,
        format!("not well-formed XML at byte {pos}: {e}"),
    )
}

impl<'t> XmlReader<'t> {
    pub fn new(
        text: &'t str,
        o: &XmlOptions,
        sources: &[Option<&str>],
        max_record_bytes: usize,
    ) -> Self {
        let mut reader = NsReader::from_str(text);
        reader.config_mut().check_end_names = true;
        let record = XmlPath::parse(o.record_element.as_deref().unwrap_or(""), &o.namespaces);
        let fields = sources
            .iter()
            .map(|s| s.map(|s| XmlPath::parse(s, &o.namespaces)))
            .collect();
        XmlReader {
            reader,
            record,
            fields,
            max_depth: o.max_depth,
            stack: Vec::new(),
            record_depth: None,
            done: Vec::new(),
            finished: false,
            max_record_bytes,
            record_start: 0,
            skipping: false,
        }
    }

    /// Whether values of the current record are being collected.
    fn collecting(&self) -> bool {
        self.record_depth.is_some() && !self.skipping
    }

    /// Starts skipping the current record if it reaches past `end` and that is over
    /// the limit; its values so far are dropped.
    fn check_size(&mut self, end: u64, values: &mut [Option<String>]) {
        if self.collecting() && end - self.record_start > self.max_record_bytes as u64 {
            self.skipping = true;
            values.iter_mut().for_each(|v| *v = None);
        }
    }

    /// Elements below the record element (empty at the record element itself).
    fn relative(&self) -> &[Step] {
        self.record_depth.map_or(&[][..], |d| &self.stack[d..])
    }

    /// Opens an element whose start tag spans `pos..end`.
    fn open(
        &mut self,
        start: &BytesStart,
        values: &mut [Option<String>],
        (pos, end): (u64, u64),
    ) -> Result<(), EntryError> {
        let step = element(&self.reader, start);
        self.stack.push(step);
        if self.stack.len() > self.max_depth {
            return Err(EntryError::new(
                ErrorCode::XmlTooDeep,
                format!("elements nest deeper than {}", self.max_depth),
            ));
        }
        if self.record_depth.is_none() && self.record.is_at(&self.stack[1..]) {
            self.record_depth = Some(self.stack.len());
            self.record_start = pos;
            self.skipping = false;
            self.done = vec![false; self.fields.len()];
            values.iter_mut().for_each(|v| *v = None);
        }
        self.check_size(end, values);
        if !self.collecting() {
            return Ok(());
        }
        let rel = self.relative().to_vec();
        for (i, path) in self.fields.iter().enumerate() {
            let Some(path) = path else { continue };
            let Some(attr_step) = &path.attribute else {
                continue;
            };
            if self.done[i] || !path.is_at(&rel) {
                continue;
            }
            for attr in start.attributes().flatten() {
                let (ns, local) = self.reader.resolver().resolve_attribute(attr.key);
                let step = Step {
                    ns: match ns {
                        ResolveResult::Bound(ns) => Some(ns.0.to_string()),
                        _ => None,
                    },
                    local: <str as ToString>::to_string(local.as_ref()),
                };
                if attr_step.matches(&step) {
                    let pos = self.reader.buffer_position();
                    let value = attr
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .map_err(|e| malformed(e, pos))?;
                    values[i] = Some(value.into_owned());
                    self.done[i] = true;
                }
            }
        }
        Ok(())
    }

    /// Appends text to every element field at the current position.
    fn text(&mut self, text: &str, values: &mut [Option<String>]) {
        let rel = self.relative();
        for (i, path) in self.fields.iter().enumerate() {
            if let Some(path) = path
                && path.attribute.is_none()
                && !self.done[i]
                && path.is_at(rel)
            {
                values[i].get_or_insert_with(String::new).push_str(text);
            }
        }
    }

    /// Closes an element; returns true when it ends a record.
    fn close(&mut self) -> bool {
        if let Some(depth) = self.record_depth {
            let rel = self.relative().to_vec();
            for (i, path) in self.fields.iter().enumerate() {
                if let Some(path) = path
                    && path.attribute.is_none()
                    && path.is_at(&rel)
                {
                    self.done[i] = true;
                }
            }
            if self.stack.len() == depth {
                self.record_depth = None;
                self.stack.pop();
                return true;
            }
        }
        self.stack.pop();
        false
    }
}

impl Records for XmlReader<'_> {
    fn next(&mut self, values: &mut [Option<String>]) -> Result<Next, EntryError> {
        if self.finished {
            return Ok(Next::End);
        }
        loop {
            let pos = self.reader.buffer_position();
            let event = self.reader.read_event().map_err(|e| malformed(e, pos))?;
            let end = self.reader.buffer_position();
            // Nothing of the event is decoded yet: it is a slice of the entry.
            self.check_size(end, values);
            let ends_record = match event {
                Event::Start(s) => {
                    self.open(&s, values, (pos, end))?;
                    false
                }
                Event::Empty(s) => {
                    self.open(&s, values, (pos, end))?;
                    self.close()
                }
                Event::End(_) => self.close(),
                Event::Eof => {
                    self.finished = true;
                    if !self.stack.is_empty() {
                        return Err(malformed("document ends inside an element", pos));
                    }
                    return Ok(Next::End);
                }
                // An undefined entity is an error wherever it is (not well formed).
                Event::GeneralRef(r) => {
                    let resolved = match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        _ => match quick_xml::escape::resolve_predefined_entity(&r) {
                            Some(s) => s.to_string(),
                            None => return Err(malformed("undefined entity reference", pos)),
                        },
                    };
                    if self.collecting() {
                        self.text(&resolved, values);
                    }
                    false
                }
                // Text outside a record, or in one being skipped, is not decoded.
                _ if !self.collecting() => false,
                Event::Text(t) => {
                    self.text(&t.xml10_content(), values);
                    false
                }
                Event::CData(c) => {
                    let raw = c.into_inner();
                    self.text(&raw, values);
                    false
                }
                Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => false,
            };
            if ends_record && self.skipping {
                self.skipping = false;
                let at = too_large("byte", self.record_start, self.max_record_bytes);
                return Ok(Next::Bad(
                    ErrorCode::RecordTooLarge,
                    format!("the record {at}"),
                ));
            }
            if ends_record {
                return Ok(Next::Record);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::error::ErrorCode;
    use crate::formats::test_support::{read_all, read_all_capped, row};

    const ONE: &str = r#"
name: t
match: { entry: ["*"] }
format: { type: xml, namespaces: { l: "urn:lab", p: "urn:pt" } }
fields:
  - { name: id, type: string, source: "@id" }
  - { name: mrn, type: string, source: "p:Patient/p:MRN" }
  - { name: value, type: string, source: "l:Value" }
  - { name: unit, type: string, source: "l:Value/@unit" }
  - { name: note, type: string, source: "Note" }
table: { mode: append }
"#;

    #[test]
    fn one_record_per_document_with_namespaces_cdata_and_entities() {
        let doc = r#"<?xml version="1.0"?>
<!-- exported -->
<lab:LabResult xmlns:lab="urn:lab" xmlns:pt="urn:pt" id="R&amp;1">
  <pt:Patient><pt:MRN>M&#49;23</pt:MRN></pt:Patient>
  <lab:Value unit="mg/dL">5.4</lab:Value>
  <lab:Note><![CDATA[a <b> & c]]> &lt;ok&gt;</lab:Note>
</lab:LabResult>"#;
        let rows = read_all(ONE, doc).unwrap();
        assert_eq!(
            rows,
            [row(&[
                Some("R&1"),
                Some("M123"),
                Some("5.4"),
                Some("mg/dL"),
                Some("a <b> & c <ok>")
            ])]
        );
    }

    #[test]
    fn wrong_namespace_does_not_match() {
        let doc =
            r#"<R xmlns:x="urn:other"><x:Patient><x:MRN>1</x:MRN></x:Patient><Value>2</Value></R>"#;
        assert_eq!(
            read_all(ONE, doc).unwrap(),
            [row(&[None, None, None, None, None])]
        );
    }

    #[test]
    fn repeated_record_element_and_default_namespace() {
        let yaml = r#"
name: t
match: { entry: ["*"] }
format: { type: xml, record_element: "b:Results/b:Result", namespaces: { b: "urn:b" } }
fields:
  - { name: code, type: string, source: "b:Code" }
  - { name: seq, type: string, source: "@seq" }
table: { mode: append }
"#;
        let doc = r#"<Batch xmlns="urn:b"><Header><Code>X</Code></Header><Results>
            <Result seq="1"><Code>A</Code><Code>ignored</Code></Result>
            <Result seq="2"/>
            <Result><Code>C</Code></Result></Results></Batch>"#;
        let rows = read_all(yaml, doc).unwrap();
        assert_eq!(
            rows,
            [
                row(&[Some("A"), Some("1")]),
                row(&[None, Some("2")]),
                row(&[Some("C"), None])
            ]
        );
    }

    #[test]
    fn malformed_truncated_deep_and_entity_bombs_are_errors() {
        assert_eq!(read_all(ONE, "<a><b></a>"), Err(ErrorCode::MalformedXml));
        assert_eq!(read_all(ONE, "<a><b>"), Err(ErrorCode::MalformedXml));
        assert_eq!(read_all(ONE, "<a>&lol;</a>"), Err(ErrorCode::MalformedXml));
        let deep = format!("{}{}", "<a>".repeat(100), "</a>".repeat(100));
        assert_eq!(read_all(ONE, &deep), Err(ErrorCode::XmlTooDeep));
    }

    const RESULTS: &str = r#"
name: t
match: { entry: ["*"] }
format: { type: xml, record_element: "Results/Result" }
fields:
  - { name: code, type: string, source: "Code" }
  - { name: seq, type: string, source: "@seq" }
table: { mode: append }
"#;

    #[test]
    fn a_record_element_over_the_limit_is_skipped_and_the_next_one_read() {
        let long = "x".repeat(200);
        let doc = format!(
            "<Batch><Note>{long}</Note><Results>\
             <Result seq=\"1\"><Code>A</Code></Result>\
             <Result seq=\"2\"><Code>B</Code><Text>{long}</Text><Code2/></Result>\
             <Result seq=\"{long}\"/>\
             <Result seq=\"4\"><Code>D&amp;</Code></Result></Results></Batch>"
        );
        let (rows, messages) = read_all_capped(RESULTS, &doc, 100).unwrap();
        assert_eq!(
            rows,
            [
                row(&[Some("A"), Some("1")]),
                Err(ErrorCode::RecordTooLarge),
                Err(ErrorCode::RecordTooLarge),
                row(&[Some("D&"), Some("4")]),
            ]
        );
        let second = doc.find("<Result seq=\"2\"").unwrap();
        assert_eq!(
            messages[0],
            format!("the record at byte {second} is longer than max_record_bytes (100)")
        );
        // Text outside the records (the long note) counts for no record.
        assert_eq!(
            read_all_capped(RESULTS, &doc, 60).unwrap().0[0],
            row(&[Some("A"), Some("1")])
        );
    }

    #[test]
    fn a_document_that_is_one_record_over_the_limit_is_one_reject() {
        let doc = format!(
            r#"<lab:LabResult xmlns:lab="urn:lab" id="1"><lab:Value>{}</lab:Value></lab:LabResult>"#,
            "5".repeat(500)
        );
        let (rows, _) = read_all_capped(ONE, &doc, 200).unwrap();
        assert_eq!(rows, [Err(ErrorCode::RecordTooLarge)]);
        // Well-formedness is still checked in a record being skipped.
        let broken = format!("<R>{}<a></b></R>", "5".repeat(500));
        assert_eq!(
            read_all_capped(ONE, &broken, 200).map(|(rows, _)| rows),
            Err(ErrorCode::MalformedXml)
        );
    }
}
