//! Generates the bindings from the system headers (`librbd-dev`, `librados-dev`; bindgen
//! needs `libclang-dev`) and links `librbd` and `librados`.
//!
//! Only `rbd_*`, `rados_*` and `librbd_*` items (and the `RBD_*`/`LIBRBD_*`/`LIBRADOS_*`
//! constants) are kept; everything else they reference is pulled in by bindgen as needed.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rustc-link-lib=rbd");
    println!("cargo:rustc-link-lib=rados");

    let bindings = bindgen::Builder::default()
        .header("wrapper.h")
        .allowlist_function("rbd_.*|rados_.*")
        .allowlist_type("rbd_.*|rados_.*|librbd_.*")
        .allowlist_var("RBD_.*|LIBRBD_.*|LIBRADOS_.*")
        .default_enum_style(bindgen::EnumVariation::Consts)
        .prepend_enum_name(false)
        .layout_tests(false)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect(
            "bindgen could not process <rados/librados.h> and <rbd/librbd.h>; \
             are librbd-dev, librados-dev and libclang-dev installed?",
        );

    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("cannot write bindings.rs to OUT_DIR");
}
