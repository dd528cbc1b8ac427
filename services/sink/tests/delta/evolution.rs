use medlake_sink::delta::{TableWriter, WriterOptions};
use serde_json::json;

use crate::support::*;

const LABS_V2: &str = r#"
name: labs
match: { entry: ["labs*.csv"] }
format: { type: csv }
fields:
  - { name: lab_id, type: int64, required: true }
  - { name: unit, type: string }
  - { name: ward, type: string }
  - { name: value, type: float64 }
table: { mode: append, partition_by: [ward] }
"#;

#[tokio::test]
async fn a_new_nullable_column_evolves_the_table_and_old_rows_read_null() {
    let lake = lake();
    let v1 = spec(LABS);
    let mut old = writer(&lake, &v1).await;
    old.write(batch(&v1, &[(0, 0, lab(1, "icu"))]))
        .await
        .unwrap();

    // The definition gains `unit` in the middle of the user fields.
    let v2 = spec(LABS_V2);
    let mut new = writer(&lake, &v2).await;
    let rec = json!({"lab_id": 2, "unit": "mg/dL", "ward": "icu", "value": 2.5});
    new.write(batch(&v2, &[(0, 1, rec)])).await.unwrap();

    // A writer opened with the old definition before the change keeps
    // working: the new column is null in its rows.
    old.write(batch(&v1, &[(0, 2, lab(3, "er"))]))
        .await
        .unwrap();

    let all = rows(&lake, "labs", "lab_id").await;
    assert_eq!(int64s(&all, "lab_id"), vec![Some(1), Some(2), Some(3)]);
    assert_eq!(
        strings(&all, "unit"),
        vec![None, Some("mg/dL".into()), None]
    );

    // Opening the evolved table with the old definition is refused: it
    // would drop `unit`.
    let err = TableWriter::open_or_create(uri(&lake), &v1, &WriterOptions::new(GROUP))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("'unit'"), "{err}");
}

#[tokio::test]
async fn incompatible_changes_are_refused_naming_the_column() {
    let lake = lake();
    let v1 = spec(LABS);
    writer(&lake, &v1).await;
    let open = |yaml: String| {
        let path = lake.path().to_str().unwrap().to_string();
        async move {
            TableWriter::open_or_create(&path, &spec(&yaml), &WriterOptions::new(GROUP))
                .await
                .unwrap_err()
                .to_string()
        }
    };
    let type_change = LABS.replace(
        "{ name: value, type: float64 }",
        "{ name: value, type: string }",
    );
    let err = open(type_change).await;
    assert!(err.contains("'value'") && err.contains("type"), "{err}");

    let required = LABS.replace(
        "  - { name: value, type: float64 }",
        "  - { name: value, type: float64 }\n  - { name: must, type: string, required: true }",
    );
    let err = open(required).await;
    assert!(err.contains("'must'") && err.contains("required"), "{err}");

    let dropped = LABS.replace("  - { name: value, type: float64 }\n", "");
    let err = open(dropped).await;
    assert!(err.contains("'value'") && err.contains("dropped"), "{err}");

    let repartitioned = LABS.replace("partition_by: [ward]", "partition_by: []");
    let err = open(repartitioned).await;
    assert!(
        err.contains("'ward'") && err.contains("partitioning"),
        "{err}"
    );
}
