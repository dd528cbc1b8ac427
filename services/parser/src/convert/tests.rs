use super::*;

fn plan(yaml: &str) -> FieldPlan {
    let field: Field = serde_yaml::from_str(yaml).unwrap();
    FieldPlan::new(&field, Some(b"test-key")).unwrap()
}

fn conv(yaml: &str, raw: &str) -> Result<Value, ErrorCode> {
    plan(yaml).convert(Some(raw), false).map_err(|e| e.0)
}

fn text(s: &str) -> Result<Value, ErrorCode> {
    Ok(Value::Text(s.into()))
}

#[test]
fn strings_trim_default_required() {
    assert_eq!(conv("{ name: a, type: string }", "  x "), text("x"));
    assert_eq!(
        conv("{ name: a, type: string, trim: false }", "  x "),
        text("  x ")
    );
    assert_eq!(conv("{ name: a, type: string }", "   "), Ok(Value::Null));
    assert_eq!(conv("{ name: a, type: string, default: U }", ""), text("U"));
    assert_eq!(
        conv("{ name: a, type: string, required: true }", " "),
        Err(ErrorCode::MissingRequired)
    );
    assert_eq!(
        plan("{ name: a, type: string, required: true }").convert(None, true),
        Ok(Value::Null)
    );
}

#[test]
fn integers_and_floats() {
    assert_eq!(conv("{ name: a, type: int32 }", "-42"), Ok(Value::Int(-42)));
    assert_eq!(conv("{ name: a, type: int32 }", "+7"), Ok(Value::Int(7)));
    assert_eq!(
        conv("{ name: a, type: int32 }", "3000000000"),
        Err(ErrorCode::BadInt)
    );
    assert_eq!(
        conv("{ name: a, type: int64 }", "3000000000"),
        Ok(Value::Int(3_000_000_000))
    );
    assert_eq!(
        conv("{ name: a, type: int64 }", "1.0"),
        Err(ErrorCode::BadInt)
    );
    assert_eq!(
        conv("{ name: a, type: float64 }", "0.875"),
        Ok(Value::Float(0.875))
    );
    assert_eq!(
        conv("{ name: a, type: float64 }", "1e3"),
        Ok(Value::Float(1000.0))
    );
    assert_eq!(
        conv("{ name: a, type: float64 }", "NaN"),
        Err(ErrorCode::BadFloat)
    );
    assert_eq!(
        conv("{ name: a, type: float64 }", "x"),
        Err(ErrorCode::BadFloat)
    );
}

#[test]
fn decimals_are_exact() {
    let d = "{ name: a, type: \"decimal(6,2)\" }";
    assert_eq!(conv(d, "12.5"), text("12.50"));
    assert_eq!(conv(d, "-0012.340"), text("-12.34"));
    assert_eq!(conv(d, "-0.00"), text("0.00"));
    assert_eq!(conv(d, ".5"), text("0.50"));
    assert_eq!(conv(d, "9999.99"), text("9999.99"));
    assert_eq!(conv(d, "10000"), Err(ErrorCode::BadDecimal));
    assert_eq!(conv(d, "1.234"), Err(ErrorCode::BadDecimal));
    assert_eq!(conv(d, "1e2"), Err(ErrorCode::BadDecimal));
    assert_eq!(conv(d, "."), Err(ErrorCode::BadDecimal));
    assert_eq!(
        conv("{ name: a, type: \"decimal(3,0)\" }", "123"),
        text("123")
    );
}

#[test]
fn booleans() {
    for t in ["true", "T", "Yes", "y", "1"] {
        assert_eq!(
            conv("{ name: a, type: bool }", t),
            Ok(Value::Bool(true)),
            "{t}"
        );
    }
    for f in ["FALSE", "f", "no", "N", "0"] {
        assert_eq!(
            conv("{ name: a, type: bool }", f),
            Ok(Value::Bool(false)),
            "{f}"
        );
    }
    assert_eq!(
        conv("{ name: a, type: bool }", "maybe"),
        Err(ErrorCode::BadBool)
    );
}

#[test]
fn dates_and_timestamps() {
    assert_eq!(
        conv(
            "{ name: a, type: date, formats: [\"%m/%d/%Y\"] }",
            "7/4/1990"
        ),
        text("1990-07-04")
    );
    assert_eq!(
        conv("{ name: a, type: date }", "1990-13-01"),
        Err(ErrorCode::BadDate)
    );
    let ts = "{ name: a, type: timestamp, formats: [\"%Y-%m-%d %H:%M\"], timezone: Europe/Zurich }";
    assert_eq!(
        conv(ts, "2024-07-01 14:00"),
        text("2024-07-01T12:00:00.000000Z")
    );
    assert_eq!(conv(ts, "2024-07-01"), Err(ErrorCode::BadTimestamp));
}

#[test]
fn allowed_and_regex() {
    assert_eq!(
        conv("{ name: a, type: string, allowed: [A, B] }", "B"),
        text("B")
    );
    assert_eq!(
        conv("{ name: a, type: string, allowed: [A, B] }", "b"),
        Err(ErrorCode::NotAllowed)
    );
    assert_eq!(
        conv("{ name: a, type: string, regex: \"[0-9]{3}\" }", "123"),
        text("123")
    );
    // The pattern must match the whole value.
    assert_eq!(
        conv("{ name: a, type: string, regex: \"[0-9]{3}\" }", "1234"),
        Err(ErrorCode::RegexMismatch)
    );
}

#[test]
fn pii_hash_is_keyed_and_stable() {
    let h = conv("{ name: a, type: string, pii: hash }", " M123 ").unwrap();
    assert_eq!(h, text(&hmac_hex(b"test-key", "M123")).unwrap());
    let Value::Text(h) = h else { panic!() };
    assert_eq!(h.len(), 64);
    assert_ne!(h, hmac_hex(b"other-key", "M123"));
    let field: Field = serde_yaml::from_str("{ name: a, type: string, pii: hash }").unwrap();
    assert!(FieldPlan::new(&field, None).is_err());
}

#[test]
fn messages_never_carry_the_value() {
    let secret = "SSN-078-05-1120";
    for yaml in [
        "{ name: a, type: int32 }",
        "{ name: a, type: \"decimal(4,1)\" }",
        "{ name: a, type: date }",
        "{ name: a, type: timestamp }",
        "{ name: a, type: bool }",
        "{ name: a, type: float64 }",
        "{ name: a, type: string, allowed: [X] }",
        "{ name: a, type: string, regex: \"[0-9]+\" }",
    ] {
        let (_, message) = plan(yaml).convert(Some(secret), false).unwrap_err();
        assert!(
            !message.contains(secret) && !message.contains("078"),
            "{yaml}: {message}"
        );
    }
}

#[test]
fn json_output() {
    let mut out = Vec::new();
    for v in [
        Value::Null,
        Value::Text("a\"b".into()),
        Value::Int(-1),
        Value::Float(0.5),
        Value::Bool(true),
    ] {
        v.write_json(&mut out);
        out.push(b' ');
    }
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "null \"a\\\"b\" -1 0.5 true "
    );
}
