//! What `imgadm list`, `show`, `get` print, and the IMGAPI client's logic.

mod common;

use alcove_images::imgapi::{self, Progress, Source};
use alcove_images::output::{self, ListOptions};
use alcove_images::{Error, Manifest, store};
use common::*;
use serde_json::{Value, json};

const OTHER: &str = "c0ffee00-1111-4222-8333-444455556666";

fn two_images() -> alcove_pool::Pool<alcove_pool::MemDisk> {
    let mut p = pool();
    let f1 = disk_image(4096, 1);
    store::install(&mut p, manifest(IMAGE, &f1, "none", 1), &f1, None).unwrap();
    let f2 = disk_image(8192, 2);
    let mut m = manifest_json(OTHER, &f2, "none", 2);
    m["name"] = json!("alpine");
    m["version"] = json!("3.19.1");
    m["published_at"] = json!("2023-12-01T08:00:00Z");
    store::install(&mut p, Manifest::from_json(m).unwrap(), &f2, Some("http://images.example")).unwrap();
    store::clone_for_instance(&mut p, IMAGE, INSTANCE, 0).unwrap();
    p
}

#[test]
fn list_prints_imgadms_columns_sorted_by_publication() {
    let p = two_images();
    let recs = store::list(&p);
    let out = output::list(&recs, &ListOptions::parse(&[]).unwrap());
    assert_eq!(
        out,
        "UUID                                  NAME       VERSION   OS     TYPE  PUB\n\
         c0ffee00-1111-4222-8333-444455556666  alpine     3.19.1    linux  zvol  2023-12-01\n\
         0b7b3b7e-8d6c-4c8e-9d3a-2f1e5a6b7c8d  debian-12  20240131  linux  zvol  2024-01-31\n"
    );
    let out =
        output::list(&recs, &ListOptions::parse(&["-H", "-o", "uuid,clones,image_size,requirements.bootrom,source"]).unwrap());
    assert_eq!(
        out,
        "c0ffee00-1111-4222-8333-444455556666  0  2  bios  http://images.example\n\
         0b7b3b7e-8d6c-4c8e-9d3a-2f1e5a6b7c8d  1  1  bios  -\n"
    );
    assert!(matches!(ListOptions::parse(&["-o"]), Err(Error::Invalid(_))));
    assert!(matches!(ListOptions::parse(&["-x"]), Err(Error::Invalid(_))));
    assert!(matches!(ListOptions::parse(&["-o", "uuid,../x"]), Err(Error::Invalid(_))));
}

#[test]
fn list_json_show_and_get_are_json() {
    let p = two_images();
    let recs = store::list(&p);
    let v: Value = serde_json::from_str(&output::list(&recs, &ListOptions::parse(&["-j"]).unwrap())).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[1]["manifest"]["uuid"], IMAGE);
    assert_eq!(v[1]["zpool"], "zones");
    assert_eq!(v[1]["clones"], 1);
    let rec = store::get(&p, IMAGE).unwrap();
    let shown = output::show(&rec);
    assert!(shown.starts_with("{\n  \""), "{shown}");
    assert_eq!(serde_json::from_str::<Value>(&shown).unwrap(), rec.manifest.json);
    let got: Value = serde_json::from_str(&output::get(&rec)).unwrap();
    assert_eq!(got["cloneNames"], json!([format!("zones/{INSTANCE}-disk0")]));
    assert_eq!(got["manifest"]["name"], "debian-12");
}

#[test]
fn image_sources_give_the_imgapi_urls_and_refuse_tricks() {
    let s = Source::new("http://10.0.2.2:8080/").unwrap();
    assert_eq!(s.images_url(), "http://10.0.2.2:8080/images");
    assert_eq!(s.image_url(IMAGE).unwrap(), format!("http://10.0.2.2:8080/images/{IMAGE}"));
    assert_eq!(s.file_url(IMAGE).unwrap(), format!("http://10.0.2.2:8080/images/{IMAGE}/file"));
    assert!(s.file_url("../../admin").is_err());
    for bad in ["ftp://x", "http://", "http://a b", "https://x/../y", "http://x/?q=1", "images.example"] {
        assert!(Source::new(bad).is_err(), "{bad}");
    }
}

#[test]
fn an_images_answer_is_parsed_and_checked() {
    let good = manifest_json(IMAGE, b"x", "gzip", 1);
    let mut zone = manifest_json(OTHER, b"y", "gzip", 1);
    zone["type"] = json!("zone-dataset");
    let body = json!([good, zone, {"uuid": 5}]).to_string();
    let l = imgapi::parse_list(body.as_bytes()).unwrap();
    assert_eq!(l.images.len(), 1);
    assert_eq!(l.skipped.len(), 2);
    assert_eq!(l.skipped[0].0, OTHER);
    assert_eq!(l.skipped[0].1.property, "type");
    assert!(imgapi::parse_list(b"{\"not\": \"a list\"}").is_err());
    assert!(imgapi::parse_list(b"<html>").is_err());
    let one = manifest_json(IMAGE, b"x", "gzip", 1).to_string();
    assert_eq!(imgapi::parse_image(one.as_bytes(), IMAGE).unwrap().uuid, IMAGE);
    // A source answering another image than asked is refused.
    assert!(matches!(imgapi::parse_image(one.as_bytes(), OTHER), Err(Error::Invalid(_))));
}

#[test]
fn the_progress_line_moves_by_whole_percents() {
    let file = vec![1u8; 3 << 20];
    let m = manifest(IMAGE, &file, "none", 4);
    let s = Source::new("http://10.0.2.2:8080").unwrap();
    assert_eq!(imgapi::import_line(&m, &s), format!("Importing {IMAGE} (debian-12@20240131) from \"http://10.0.2.2:8080\""));
    let mut p = Progress::new(&m);
    let mut lines = Vec::new();
    for piece in file.chunks(1000) {
        lines.extend(p.advance(piece.len() as u64));
    }
    assert!(lines.len() <= 101 && lines.len() >= 100, "{}", lines.len());
    assert_eq!(lines.last().unwrap(), "Downloading image 0b7b3b7e [====================] 100%  3.0MiB of 3.0MiB");
    assert!(lines[0].contains("[>                   ]   0%"), "{}", lines[0]);
}

#[test]
fn list_filters_and_sorts_as_imgadm() {
    let p = two_images();
    let recs = store::list(&p);
    let o = ListOptions::parse(&["-H", "-o", "name", "name=alpine"]).unwrap();
    assert_eq!(output::list(&recs, &o), "alpine\n");
    let o = ListOptions::parse(&["-H", "-o", "name,image_size", "-s", "-image_size"]).unwrap();
    assert_eq!(output::list(&recs, &o), "alpine     2\ndebian-12  1\n");
    let o = ListOptions::parse(&["-H", "-o", "name", "-s", "name"]).unwrap();
    assert_eq!(output::list(&recs, &o), "alpine\ndebian-12\n");
    let o = ListOptions::parse(&["-j", "clones=1"]).unwrap();
    let v: Value = serde_json::from_str(&output::list(&recs, &o)).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["manifest"]["uuid"], IMAGE);
    let o = ListOptions::parse(&["os=windows"]).unwrap();
    assert_eq!(output::list(&recs, &o), "UUID  NAME  VERSION  OS  TYPE  PUB\n");
    assert!(ListOptions::parse(&["../x=1"]).is_err());
    assert!(ListOptions::parse(&["-s", "-"]).is_err());
}

#[test]
fn avail_lists_what_a_source_offers() {
    let mut zone = manifest_json(OTHER, b"y", "gzip", 1);
    zone["type"] = json!("zone-dataset");
    let body = json!([manifest_json(IMAGE, b"x", "gzip", 1), zone]).to_string();
    let l = imgapi::parse_list(body.as_bytes()).unwrap();
    let out = output::avail_table(&l, &ListOptions::parse(&[]).unwrap());
    assert_eq!(
        out,
        "UUID                                  NAME       VERSION   OS     TYPE  PUB\n\
         0b7b3b7e-8d6c-4c8e-9d3a-2f1e5a6b7c8d  debian-12  20240131  linux  zvol  2024-01-31\n"
    );
}

#[test]
fn the_imgadm_verbs_print_and_exit_as_imgadm() {
    use alcove_images::cli;
    let mut p = two_images();
    let out = cli::run(&mut p, &["list", "-H", "-o", "uuid"]);
    assert_eq!((out.stdout.as_str(), out.status), (format!("{OTHER}\n{IMAGE}\n").as_str(), 0));
    let out = cli::run(&mut p, &["show", IMAGE]);
    assert_eq!(out.status, 0);
    assert_eq!(serde_json::from_str::<Value>(&out.stdout).unwrap()["uuid"], IMAGE);
    let missing = "11111111-2222-4333-8444-555555555555";
    let out = cli::run(&mut p, &["get", missing]);
    assert_eq!(out.status, 3);
    assert_eq!(out.stderr, format!("imgadm: error (ImageNotInstalled): image \"{missing}\" was not found on zpool \"zones\"\n"));
    let out = cli::run(&mut p, &["delete", IMAGE]);
    assert_eq!(out.status, 1);
    assert_eq!(
        out.stderr,
        format!("imgadm: error (ImageHasDependentClones): image \"{IMAGE}\" has dependent clones: zones/{INSTANCE}-disk0\n")
    );
    let out = cli::run(&mut p, &["delete", OTHER]);
    assert_eq!((out.stdout, out.status), (format!("Deleted image {OTHER}\n"), 0));
    for bad in [&["show"][..], &["show", "a", "b"], &["show", "../../x"], &["frob"], &["list", "-q"]] {
        let out = cli::run(&mut p, bad);
        assert_eq!(out.status, 1, "{bad:?}");
        assert!(out.stderr.starts_with("imgadm: error ("), "{bad:?}: {}", out.stderr);
    }
    assert_eq!(cli::run(&mut p, &[]).status, 1);
    assert!(cli::run(&mut p, &["help"]).stdout.contains("imgadm list"));
}
