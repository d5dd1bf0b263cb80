//! A small SOQL: the subset of Salesforce's query language the CRM sandbox answers.
//!
//! ```text
//! SELECT f1, f2 FROM Obj [WHERE c [AND c]...] [ORDER BY f [ASC|DESC] [, ...]] [LIMIT n]
//! c := field = literal | field != literal | field [NOT] IN (literal, ...)
//! literal := 'text' (with \' \" \\ \n \r \t \b \f escapes) | true | false | null
//! ```
//! Keywords, object and field names are case-insensitive, as in Salesforce. A field is a field
//! of the object or `Relationship.Field` of a parent (`Contact.Customer_Id__c` on `Case`).
//!
//! [`parse`] turns text into a [`Query`] (syntax errors: `MALFORMED_QUERY`), [`Query::bind`]
//! checks it against the [`SObjectType`] schema (`INVALID_TYPE`, `INVALID_FIELD`,
//! `INVALID_QUERY_FILTER_OPERATOR`), and the [`BoundQuery`] filters and sorts records given a
//! way to read their fields. Reading records from the world is the CRM server's job.

use std::cmp::Ordering;

use serde_json::Value;

/// A SOQL error, answered as `400 [{"message", "errorCode"}]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub(crate) struct SoqlError {
    /// Salesforce's `errorCode`.
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl SoqlError {
    fn malformed(message: impl Into<String>) -> Self {
        Self {
            code: "MALFORMED_QUERY",
            message: message.into(),
        }
    }
}

/// The type of a field, which decides the literals it can be compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldType {
    /// An 18-character record id; 15-character ids in filters are accepted.
    Id,
    Text,
    /// A restricted picklist with these values.
    Picklist(&'static [&'static str]),
    Boolean,
    DateTime,
}

/// One field of an sObject.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct FieldDef {
    /// The canonical spelling, used in answers.
    pub(crate) name: &'static str,
    pub(crate) ty: FieldType,
    /// Whether a create (`POST sobjects/Type`) may set it.
    pub(crate) createable: bool,
}

/// A lookup from a child to its parent: `Case.Contact` through `Case.ContactId`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Relationship {
    pub(crate) name: &'static str,
    /// The reference field holding the parent's id.
    pub(crate) via: &'static str,
    pub(crate) target: SObjectType,
}

/// The sObjects the sandbox CRM knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SObjectType {
    Contact,
    Case,
    CaseComment,
}

const fn field(name: &'static str, ty: FieldType, createable: bool) -> FieldDef {
    FieldDef {
        name,
        ty,
        createable,
    }
}

const CONTACT_FIELDS: &[FieldDef] = &[
    field("Id", FieldType::Id, false),
    field("FirstName", FieldType::Text, true),
    field("LastName", FieldType::Text, true),
    field("Email", FieldType::Text, true),
    field("Customer_Id__c", FieldType::Text, true),
];

const CASE_FIELDS: &[FieldDef] = &[
    field("Id", FieldType::Id, false),
    field("CaseNumber", FieldType::Text, false),
    field("Subject", FieldType::Text, true),
    field("Description", FieldType::Text, true),
    field(
        "Status",
        FieldType::Picklist(&["New", "Working", "Escalated", "Closed"]),
        true,
    ),
    field(
        "Priority",
        FieldType::Picklist(&["Low", "Medium", "High"]),
        true,
    ),
    field(
        "Origin",
        FieldType::Picklist(&["Web", "Phone", "Email", "App"]),
        true,
    ),
    field("ContactId", FieldType::Id, true),
    field("Order_Id__c", FieldType::Text, true),
    field("IsClosed", FieldType::Boolean, false),
    field("CreatedDate", FieldType::DateTime, false),
    field("ClosedDate", FieldType::DateTime, false),
];

const CASE_COMMENT_FIELDS: &[FieldDef] = &[
    field("Id", FieldType::Id, false),
    field("ParentId", FieldType::Id, true),
    field("CommentBody", FieldType::Text, true),
    field("IsPublished", FieldType::Boolean, true),
    field("CreatedDate", FieldType::DateTime, false),
    field("CreatedById", FieldType::Id, false),
];

const CASE_RELATIONSHIPS: &[Relationship] = &[Relationship {
    name: "Contact",
    via: "ContactId",
    target: SObjectType::Contact,
}];

const CASE_COMMENT_RELATIONSHIPS: &[Relationship] = &[Relationship {
    name: "Parent",
    via: "ParentId",
    target: SObjectType::Case,
}];

impl SObjectType {
    pub(crate) const ALL: [Self; 3] = [Self::Contact, Self::Case, Self::CaseComment];

    /// The API name, e.g. `Case`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Contact => "Contact",
            Self::Case => "Case",
            Self::CaseComment => "CaseComment",
        }
    }

    /// Looks an object up by name, ignoring case.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|object| object.name().eq_ignore_ascii_case(name))
    }

    pub(crate) fn fields(self) -> &'static [FieldDef] {
        match self {
            Self::Contact => CONTACT_FIELDS,
            Self::Case => CASE_FIELDS,
            Self::CaseComment => CASE_COMMENT_FIELDS,
        }
    }

    pub(crate) fn relationships(self) -> &'static [Relationship] {
        match self {
            Self::Contact => &[],
            Self::Case => CASE_RELATIONSHIPS,
            Self::CaseComment => CASE_COMMENT_RELATIONSHIPS,
        }
    }

    /// Looks a field up by name, ignoring case.
    pub(crate) fn field(self, name: &str) -> Option<&'static FieldDef> {
        self.fields()
            .iter()
            .find(|field| field.name.eq_ignore_ascii_case(name))
    }

    /// Resolves `Field` or `Relationship.Field`; unknown names are `INVALID_FIELD`.
    pub(crate) fn resolve(self, path: &str) -> Result<FieldRef, SoqlError> {
        let invalid = || SoqlError {
            code: "INVALID_FIELD",
            message: format!(
                "No such column '{path}' on entity '{}'. If you are attempting to use a custom \
                 field, be sure to append the '__c' after the custom field name.",
                self.name()
            ),
        };
        match path.split_once('.') {
            None => self.field(path).map(FieldRef::own).ok_or_else(invalid),
            Some((relationship, field)) => {
                let relationship = self
                    .relationships()
                    .iter()
                    .find(|r| r.name.eq_ignore_ascii_case(relationship))
                    .ok_or_else(invalid)?;
                // One level of parent lookups only, like the fields the sandbox documents.
                let field = relationship.target.field(field).ok_or_else(invalid)?;
                Ok(FieldRef {
                    relationship: Some(relationship),
                    field,
                })
            }
        }
    }
}

/// A resolved field: one of the object's own, or a parent's through a relationship.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FieldRef {
    pub(crate) relationship: Option<&'static Relationship>,
    pub(crate) field: &'static FieldDef,
}

impl FieldRef {
    fn own(field: &'static FieldDef) -> Self {
        Self {
            relationship: None,
            field,
        }
    }

    /// `Field` or `Relationship.Field`, canonically spelled.
    pub(crate) fn path(&self) -> String {
        match self.relationship {
            None => self.field.name.to_owned(),
            Some(relationship) => format!("{}.{}", relationship.name, self.field.name),
        }
    }
}

/// A literal in a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Literal {
    Text(String),
    Bool(bool),
    Null,
    Number(String),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operator {
    Equals,
    NotEquals,
    In,
    NotIn,
}

/// One `field op value(s)` of a `WHERE` clause, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Condition {
    pub(crate) field: String,
    pub(crate) operator: Operator,
    pub(crate) values: Vec<Literal>,
}

/// One item of an `ORDER BY` clause, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OrderItem {
    pub(crate) field: String,
    pub(crate) descending: bool,
}

/// A parsed, not yet checked, SOQL query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Query {
    pub(crate) select: Vec<String>,
    pub(crate) from: String,
    pub(crate) conditions: Vec<Condition>,
    pub(crate) order_by: Vec<OrderItem>,
    pub(crate) limit: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Text(String),
    Number(String),
    Comma,
    Open,
    Close,
    Equals,
    NotEquals,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Self::Word(word) => word.clone(),
            Self::Text(text) => format!("'{text}'"),
            Self::Number(number) => number.clone(),
            Self::Comma => ",".to_owned(),
            Self::Open => "(".to_owned(),
            Self::Close => ")".to_owned(),
            Self::Equals => "=".to_owned(),
            Self::NotEquals => "!=".to_owned(),
        }
    }
}

/// Longest query text the sandbox parses (Salesforce's limit is 100,000 characters).
const MAX_QUERY_CHARS: usize = 100_000;

fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, SoqlError> {
    if text.len() > MAX_QUERY_CHARS {
        return Err(SoqlError {
            code: "MALFORMED_QUERY",
            message: format!("Query is longer than {MAX_QUERY_CHARS} characters"),
        });
    }
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(at, c)) = chars.peek() {
        let column = at + 1;
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            ',' | '(' | ')' | '=' => {
                chars.next();
                tokens.push((
                    column,
                    match c {
                        ',' => Token::Comma,
                        '(' => Token::Open,
                        ')' => Token::Close,
                        _ => Token::Equals,
                    },
                ));
            }
            '!' => {
                chars.next();
                match chars.next() {
                    Some((_, '=')) => tokens.push((column, Token::NotEquals)),
                    _ => {
                        return Err(SoqlError::malformed(format!(
                            "unexpected token: '!' at column {column}"
                        )));
                    }
                }
            }
            '\'' => {
                chars.next();
                let mut value = String::new();
                loop {
                    match chars.next() {
                        None => {
                            return Err(SoqlError::malformed(format!(
                                "unterminated string literal starting at column {column}"
                            )));
                        }
                        Some((_, '\'')) => break,
                        Some((escape_at, '\\')) => {
                            let escaped = match chars.next().map(|(_, c)| c) {
                                Some('\'') => '\'',
                                Some('"') => '"',
                                Some('\\') => '\\',
                                Some('n') => '\n',
                                Some('r') => '\r',
                                Some('t') => '\t',
                                Some('b') => '\u{8}',
                                Some('f') => '\u{c}',
                                _ => {
                                    return Err(SoqlError::malformed(format!(
                                        "Invalid string literal: illegal escape sequence at \
                                         column {}",
                                        escape_at + 1
                                    )));
                                }
                            };
                            value.push(escaped);
                        }
                        Some((_, c)) => value.push(c),
                    }
                }
                tokens.push((column, Token::Text(value)));
            }
            c if c.is_ascii_digit() => {
                let mut number = String::new();
                while let Some(&(_, c)) = chars.peek() {
                    if !c.is_ascii_digit() {
                        break;
                    }
                    number.push(c);
                    chars.next();
                }
                tokens.push((column, Token::Number(number)));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut word = String::new();
                while let Some(&(_, c)) = chars.peek() {
                    if !(c.is_ascii_alphanumeric() || c == '_' || c == '.') {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                tokens.push((column, Token::Word(word)));
            }
            other => {
                return Err(SoqlError::malformed(format!(
                    "unexpected token: '{other}' at column {column}"
                )));
            }
        }
    }
    Ok(tokens)
}

const KEYWORDS: [&str; 16] = [
    "SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "ORDER", "BY", "ASC", "DESC", "LIMIT",
    "NULL", "TRUE", "FALSE", "NULLS",
];

struct Parser {
    tokens: Vec<(usize, Token)>,
    position: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.position).map(|(_, token)| token)
    }

    fn unexpected(&self) -> SoqlError {
        match self.tokens.get(self.position) {
            Some((column, token)) => SoqlError::malformed(format!(
                "unexpected token: '{}' at column {column}",
                token.describe()
            )),
            None => SoqlError::malformed("unexpected end of query"),
        }
    }

    fn at_keyword(&self, keyword: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(word)) if word.eq_ignore_ascii_case(keyword))
    }

    fn keyword(&mut self, keyword: &str) -> Result<(), SoqlError> {
        if self.at_keyword(keyword) {
            self.position += 1;
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    fn token(&mut self, expected: &Token) -> Result<(), SoqlError> {
        if self.peek() == Some(expected) {
            self.position += 1;
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    /// A field or object name: a word that is not a keyword.
    fn name(&mut self) -> Result<String, SoqlError> {
        match self.peek() {
            Some(Token::Word(word))
                if !KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(word))
                    && !word.starts_with('.')
                    && !word.ends_with('.')
                    && !word.contains("..") =>
            {
                let word = word.clone();
                self.position += 1;
                Ok(word)
            }
            _ => Err(self.unexpected()),
        }
    }

    fn literal(&mut self) -> Result<Literal, SoqlError> {
        let literal = match self.peek() {
            Some(Token::Text(text)) => Literal::Text(text.clone()),
            Some(Token::Number(number)) => Literal::Number(number.clone()),
            Some(Token::Word(word)) if word.eq_ignore_ascii_case("true") => Literal::Bool(true),
            Some(Token::Word(word)) if word.eq_ignore_ascii_case("false") => Literal::Bool(false),
            Some(Token::Word(word)) if word.eq_ignore_ascii_case("null") => Literal::Null,
            _ => return Err(self.unexpected()),
        };
        self.position += 1;
        Ok(literal)
    }

    fn list<T>(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<T, SoqlError>,
    ) -> Result<Vec<T>, SoqlError> {
        let mut items = vec![item(self)?];
        while self.peek() == Some(&Token::Comma) {
            self.position += 1;
            items.push(item(self)?);
        }
        Ok(items)
    }

    fn condition(&mut self) -> Result<Condition, SoqlError> {
        let field = self.name()?;
        let (operator, values) = match self.peek() {
            Some(Token::Equals) => {
                self.position += 1;
                (Operator::Equals, vec![self.literal()?])
            }
            Some(Token::NotEquals) => {
                self.position += 1;
                (Operator::NotEquals, vec![self.literal()?])
            }
            _ => {
                let operator = if self.at_keyword("NOT") {
                    self.position += 1;
                    Operator::NotIn
                } else {
                    Operator::In
                };
                self.keyword("IN")?;
                self.token(&Token::Open)?;
                let values = self.list(Self::literal)?;
                self.token(&Token::Close)?;
                (operator, values)
            }
        };
        Ok(Condition {
            field,
            operator,
            values,
        })
    }

    fn order_item(&mut self) -> Result<OrderItem, SoqlError> {
        let field = self.name()?;
        let descending = if self.at_keyword("DESC") {
            self.position += 1;
            true
        } else {
            if self.at_keyword("ASC") {
                self.position += 1;
            }
            false
        };
        Ok(OrderItem { field, descending })
    }
}

/// Parses SOQL text. Anything outside the subset is `MALFORMED_QUERY`.
pub(crate) fn parse(text: &str) -> Result<Query, SoqlError> {
    let mut parser = Parser {
        tokens: tokenize(text)?,
        position: 0,
    };
    parser.keyword("SELECT")?;
    let select = parser.list(Parser::name)?;
    parser.keyword("FROM")?;
    let from = parser.name()?;
    let mut conditions = Vec::new();
    if parser.at_keyword("WHERE") {
        parser.position += 1;
        conditions.push(parser.condition()?);
        while parser.at_keyword("AND") {
            parser.position += 1;
            conditions.push(parser.condition()?);
        }
    }
    let mut order_by = Vec::new();
    if parser.at_keyword("ORDER") {
        parser.position += 1;
        parser.keyword("BY")?;
        order_by = parser.list(Parser::order_item)?;
    }
    let mut limit = None;
    if parser.at_keyword("LIMIT") {
        parser.position += 1;
        match parser.peek() {
            Some(Token::Number(number)) => {
                let value = number
                    .parse::<u64>()
                    .map_err(|_| SoqlError::malformed(format!("LIMIT {number} is too large")))?;
                limit = Some(value);
                parser.position += 1;
            }
            _ => return Err(parser.unexpected()),
        }
    }
    if parser.peek().is_some() {
        return Err(parser.unexpected());
    }
    Ok(Query {
        select,
        from,
        conditions,
        order_by,
        limit,
    })
}

/// A filter value, already checked against its field's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FilterValue {
    Text(String),
    Bool(bool),
    Null,
}

/// A checked `WHERE` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BoundCondition {
    pub(crate) field: FieldRef,
    /// `!=` and `NOT IN`.
    pub(crate) negated: bool,
    pub(crate) values: Vec<FilterValue>,
}

/// A query checked against the schema, ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BoundQuery {
    pub(crate) object: SObjectType,
    pub(crate) select: Vec<FieldRef>,
    pub(crate) conditions: Vec<BoundCondition>,
    pub(crate) order_by: Vec<(FieldRef, bool)>,
    pub(crate) limit: Option<u64>,
}

impl Query {
    /// Checks object, fields and literal types against the schema.
    pub(crate) fn bind(&self) -> Result<BoundQuery, SoqlError> {
        let object = SObjectType::parse(&self.from).ok_or_else(|| SoqlError {
            code: "INVALID_TYPE",
            message: format!(
                "sObject type '{}' is not supported. If you are attempting to use a custom \
                 object, be sure to append the '__c' after the entity name.",
                self.from
            ),
        })?;
        let mut select: Vec<FieldRef> = Vec::with_capacity(self.select.len());
        for name in &self.select {
            let field = object.resolve(name)?;
            if select.contains(&field) {
                return Err(SoqlError::malformed(format!(
                    "duplicate field selected: {}",
                    field.path()
                )));
            }
            select.push(field);
        }
        let conditions = self
            .conditions
            .iter()
            .map(|condition| {
                let field = object.resolve(&condition.field)?;
                let values = condition
                    .values
                    .iter()
                    .map(|literal| filter_value(&field, literal))
                    .collect::<Result<_, _>>()?;
                Ok(BoundCondition {
                    field,
                    negated: matches!(condition.operator, Operator::NotEquals | Operator::NotIn),
                    values,
                })
            })
            .collect::<Result<_, SoqlError>>()?;
        let order_by = self
            .order_by
            .iter()
            .map(|item| Ok((object.resolve(&item.field)?, item.descending)))
            .collect::<Result<_, SoqlError>>()?;
        Ok(BoundQuery {
            object,
            select,
            conditions,
            order_by,
            limit: self.limit,
        })
    }
}

fn filter_value(field: &FieldRef, literal: &Literal) -> Result<FilterValue, SoqlError> {
    let mismatch = |expected: &str| SoqlError {
        code: "INVALID_QUERY_FILTER_OPERATOR",
        message: format!(
            "value of filter criterion for field '{}' must be of type {expected}",
            field.path()
        ),
    };
    match (field.field.ty, literal) {
        (_, Literal::Null) => Ok(FilterValue::Null),
        (FieldType::Id, Literal::Text(text)) => Ok(FilterValue::Text(
            super::world::normalize_salesforce_id(text),
        )),
        (FieldType::Text | FieldType::Picklist(_), Literal::Text(text)) => {
            Ok(FilterValue::Text(text.clone()))
        }
        (FieldType::Boolean, Literal::Bool(value)) => Ok(FilterValue::Bool(*value)),
        (FieldType::Boolean, _) => Err(mismatch("boolean and should not be enclosed in quotes")),
        (FieldType::DateTime, _) => Err(mismatch("dateTime and should not be enclosed in quotes")),
        (FieldType::Id | FieldType::Text | FieldType::Picklist(_), _) => {
            Err(mismatch("string and should be enclosed in quotes"))
        }
    }
}

impl FilterValue {
    /// Whether a field's value equals this filter value; text compares case-insensitively, as
    /// Salesforce does.
    fn matches(&self, value: &Value) -> bool {
        match (self, value) {
            (Self::Null, Value::Null) => true,
            (Self::Text(expected), Value::String(actual)) => expected.eq_ignore_ascii_case(actual),
            (Self::Bool(expected), Value::Bool(actual)) => expected == actual,
            _ => false,
        }
    }
}

impl BoundQuery {
    /// Whether a record passes every condition; `get` reads one of its fields (JSON null for
    /// an empty field or a missing parent).
    pub(crate) fn matches(&self, get: impl Fn(&FieldRef) -> Value) -> bool {
        self.conditions.iter().all(|condition| {
            let value = get(&condition.field);
            let any = condition
                .values
                .iter()
                .any(|expected| expected.matches(&value));
            any != condition.negated
        })
    }

    /// Compares two records' `ORDER BY` keys (each a value per item). Nulls sort first
    /// ascending and last descending, as in Salesforce; text ignores case.
    pub(crate) fn compare_keys(&self, a: &[Value], b: &[Value]) -> Ordering {
        for ((_, descending), (a, b)) in self.order_by.iter().zip(a.iter().zip(b)) {
            let ordering = compare_values(a, b);
            let ordering = if *descending {
                ordering.reverse()
            } else {
                ordering
            };
            if ordering != Ordering::Equal {
                return ordering;
            }
        }
        Ordering::Equal
    }
}

fn compare_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        (Value::String(a), Value::String(b)) => a
            .to_lowercase()
            .cmp(&b.to_lowercase())
            .then_with(|| a.cmp(b)),
        (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
        _ => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_documented_subset() {
        let query = parse(
            "select Id, Subject, Contact.Customer_Id__c FROM Case \
             WHERE Contact.Customer_Id__c IN ('cust-0001', 'cust-0002') AND IsClosed = false \
             AND Status != 'Closed' ORDER BY CreatedDate DESC, Id LIMIT 10",
        )
        .unwrap();
        assert_eq!(query.select, ["Id", "Subject", "Contact.Customer_Id__c"]);
        assert_eq!(query.from, "Case");
        assert_eq!(query.conditions.len(), 3);
        assert_eq!(query.conditions[0].operator, Operator::In);
        assert_eq!(
            query.conditions[0].values,
            [
                Literal::Text("cust-0001".into()),
                Literal::Text("cust-0002".into())
            ]
        );
        assert_eq!(query.conditions[1].values, [Literal::Bool(false)]);
        assert_eq!(query.conditions[2].operator, Operator::NotEquals);
        assert_eq!(
            query.order_by,
            [
                OrderItem {
                    field: "CreatedDate".into(),
                    descending: true
                },
                OrderItem {
                    field: "Id".into(),
                    descending: false
                }
            ]
        );
        assert_eq!(query.limit, Some(10));
        let bound = query.bind().unwrap();
        assert_eq!(bound.object, SObjectType::Case);
        assert_eq!(bound.select[2].path(), "Contact.Customer_Id__c");
    }

    #[test]
    fn string_literals_unescape() {
        let query = parse(r"SELECT Id FROM Case WHERE Subject = 'Ada\'s \\ parcel\n'").unwrap();
        assert_eq!(
            query.conditions[0].values,
            [Literal::Text("Ada's \\ parcel\n".into())]
        );
        let query = parse("SELECT Id FROM Case WHERE Subject NOT IN ('a,b', '(c)')").unwrap();
        assert_eq!(query.conditions[0].operator, Operator::NotIn);
        assert_eq!(query.conditions[0].values.len(), 2);
    }

    #[test]
    fn malformed_queries_are_rejected() {
        for text in [
            "",
            "SELECT",
            "SELECT FROM Case",
            "SELECT Id Case",
            "SELECT Id, FROM Case",
            "SELECT Id FROM",
            "SELECT Id FROM Case WHERE",
            "SELECT Id FROM Case WHERE Subject = 'unterminated",
            r"SELECT Id FROM Case WHERE Subject = 'bad \q escape'",
            "SELECT Id FROM Case WHERE Subject = 'a' OR Subject = 'b'",
            "SELECT Id FROM Case WHERE Subject IN ()",
            "SELECT Id FROM Case WHERE Subject IN ('a'",
            "SELECT Id FROM Case WHERE Subject < 'a'",
            "SELECT Id FROM Case LIMIT",
            "SELECT Id FROM Case LIMIT ten",
            "SELECT Id FROM Case LIMIT 99999999999999999999999",
            "SELECT Id FROM Case ORDER CreatedDate",
            "SELECT Id FROM Case trailing",
            "SELECT Id FROM Case; DELETE",
            "SELECT Id, Id FROM Case",
            "SELECT .Id FROM Case",
        ] {
            let error = parse(text).and_then(|query| query.bind()).unwrap_err();
            assert_eq!(error.code, "MALFORMED_QUERY", "{text:?}: {error}");
        }
    }

    #[test]
    fn unknown_names_are_invalid_fields_or_types() {
        let error = parse("SELECT Id, Nope FROM Case")
            .unwrap()
            .bind()
            .unwrap_err();
        assert_eq!(error.code, "INVALID_FIELD");
        assert!(error.message.contains("'Nope'"), "{}", error.message);
        for text in [
            "SELECT Id FROM Case WHERE Nope = 'x'",
            "SELECT Id FROM Case ORDER BY Nope",
            "SELECT Account.Name FROM Case",
            "SELECT Contact.Nope FROM Case",
            "SELECT Customer_Id__c FROM Case",
        ] {
            let error = parse(text).unwrap().bind().unwrap_err();
            assert_eq!(error.code, "INVALID_FIELD", "{text}");
        }
        let error = parse("SELECT Id FROM Account").unwrap().bind().unwrap_err();
        assert_eq!(error.code, "INVALID_TYPE");
    }

    #[test]
    fn literals_must_fit_the_field_type() {
        for text in [
            "SELECT Id FROM Case WHERE IsClosed = 'false'",
            "SELECT Id FROM Case WHERE Subject = 42",
            "SELECT Id FROM Case WHERE Subject = true",
            "SELECT Id FROM Case WHERE CreatedDate = '2025-01-01'",
        ] {
            let error = parse(text).unwrap().bind().unwrap_err();
            assert_eq!(error.code, "INVALID_QUERY_FILTER_OPERATOR", "{text}");
        }
    }

    #[test]
    fn names_and_keywords_ignore_case() {
        let bound = parse("sElEcT id, customer_id__C fRoM contact wHeRe CUSTOMER_ID__C = 'X'")
            .unwrap()
            .bind()
            .unwrap();
        assert_eq!(bound.object, SObjectType::Contact);
        assert_eq!(bound.select[1].path(), "Customer_Id__c");
    }

    #[test]
    fn bound_queries_filter_and_sort() {
        let bound = parse(
            "SELECT Id FROM Case WHERE Status IN ('new', 'Working') AND Order_Id__c = null \
             ORDER BY Subject DESC",
        )
        .unwrap()
        .bind()
        .unwrap();
        fn record(status: &'static str, order: Value) -> impl Fn(&FieldRef) -> Value {
            move |field: &FieldRef| match field.field.name {
                "Status" => json!(status),
                "Order_Id__c" => order.clone(),
                _ => Value::Null,
            }
        }
        assert!(bound.matches(record("New", Value::Null)));
        assert!(!bound.matches(record("Closed", Value::Null)));
        assert!(!bound.matches(record("New", json!("ord-000001"))));
        assert_eq!(
            bound.compare_keys(&[json!("b")], &[json!("A")]),
            Ordering::Less
        );
        assert_eq!(
            bound.compare_keys(&[Value::Null], &[json!("a")]),
            Ordering::Greater
        );
    }

    #[test]
    fn fifteen_character_ids_match_their_eighteen_character_form() {
        let bound = parse("SELECT Id FROM Case WHERE Id = '500000000000001'")
            .unwrap()
            .bind()
            .unwrap();
        assert!(bound.matches(|_| json!("500000000000001AAA")));
    }
}
