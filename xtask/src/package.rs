//! `cargo xtask package`: the filter as platform teams pull it, under `target/package/`.
//!
//! - `edge_filter.wasm` and `edge_filter.wasm.sha256` (`sha256sum` format): what Envoy's
//!   `code.remote` and Envoy Gateway's HTTP code source load, with the digest they check;
//! - `edge-filter-oci/`: an OCI image layout of the filter in the form Istio's `WasmPlugin`
//!   and Envoy Gateway's image code source both pull, the "compat" variant of the Wasm
//!   image specification: an ordinary image whose one gzipped tar layer holds `plugin.wasm`
//!   (an image with more layers, or the two-layer `application/vnd.module.wasm` variant,
//!   is refused by one fetcher or the other). Push it with
//!   `oras cp --from-oci-layout target/package/edge-filter-oci:<version> <registry>/edge-filter:<version>`
//!   or `skopeo copy oci:target/package/edge-filter-oci:<version> docker://…`.
//!
//! Reproducible: nothing depends on the clock, the user or the machine (every timestamp is
//! the epoch, owners are root, entries sorted), so the same `edge_filter.wasm` gives the
//! same digests wherever it is packaged.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use flate2::{Compression, GzBuilder};
use oci_spec::image::{
    Arch, Descriptor, DescriptorBuilder, Digest, ImageConfigurationBuilder, ImageIndexBuilder,
    ImageManifestBuilder, MediaType, OciLayoutBuilder, Os, RootFsBuilder,
};
use sha2::{Digest as _, Sha256};

use crate::{artifacts, paths};

/// The file name Istio's and Envoy Gateway's image fetchers look for in the layer.
pub const PLUGIN_FILE: &str = "plugin.wasm";

/// The tag (`org.opencontainers.image.ref.name`) of the image in the layout: the filter
/// crate's version (`plugin/Cargo.toml`).
pub fn version() -> Result<String> {
    let path = paths::root().join("plugin/Cargo.toml");
    let manifest: toml::Table = fs::read_to_string(&path)
        .with_context(|| format!("reading {}", path.display()))?
        .parse()
        .with_context(|| format!("parsing {}", path.display()))?;
    manifest
        .get("package")
        .and_then(|p| p.get("version"))
        .and_then(toml::Value::as_str)
        .map(str::to_owned)
        .with_context(|| format!("{}: no package.version", path.display()))
}

/// What [`package`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packaged {
    /// `sha256` of `edge_filter.wasm`, in hex.
    pub wasm_sha256: String,
    /// The digest of the image manifest (`sha256:…`): what a registry reports after a push.
    pub manifest_digest: String,
    /// The image's tag in the layout.
    pub tag: String,
}

/// The output folder, `target/package/`.
pub fn out_dir() -> PathBuf {
    paths::target_dir().join("package")
}

/// Builds the release filter and packages it into [`out_dir`].
pub fn run() -> Result<Packaged> {
    artifacts::build_filter()?;
    let wasm = fs::read(paths::filter_wasm())
        .with_context(|| format!("reading {}", paths::filter_wasm().display()))?;
    let out = out_dir();
    let packaged = package(&wasm, &out)?;
    println!("{}", out.join("edge_filter.wasm").display());
    println!("  sha256 {}", packaged.wasm_sha256);
    println!("{}", out.join("edge-filter-oci").display());
    println!(
        "  tag {}, manifest {}",
        packaged.tag, packaged.manifest_digest
    );
    Ok(packaged)
}

/// Writes `wasm` and its packaging into `out` (replacing what a previous run wrote there).
pub fn package(wasm: &[u8], out: &Path) -> Result<Packaged> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let wasm_sha256 = hex(&Sha256::digest(wasm));
    fs::write(out.join("edge_filter.wasm"), wasm)?;
    fs::write(
        out.join("edge_filter.wasm.sha256"),
        format!("{wasm_sha256}  edge_filter.wasm\n"),
    )?;
    let layout = out.join("edge-filter-oci");
    if layout.exists() {
        fs::remove_dir_all(&layout)?;
    }
    let tag = version()?;
    let manifest_digest = image_layout(wasm, &tag, &layout)?;
    Ok(Packaged {
        wasm_sha256,
        manifest_digest,
        tag,
    })
}

/// Writes the compat-variant OCI image layout of `wasm`, tagged `tag`, into `dir`; returns
/// the manifest's digest.
pub fn image_layout(wasm: &[u8], tag: &str, dir: &Path) -> Result<String> {
    let blobs = Blobs::create(dir)?;
    let tar = layer_tar(wasm)?;
    let diff_id = format!("sha256:{}", hex(&Sha256::digest(&tar)));
    let layer = blobs.put(MediaType::ImageLayerGzip, &gzip(&tar)?)?;

    // What `FROM scratch` + `COPY plugin.wasm ./` would describe, minus anything dated.
    let config = ImageConfigurationBuilder::default()
        .architecture(Arch::Wasm)
        .os(Os::Other("wasip1".into()))
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![diff_id])
                .build()?,
        )
        .build()?;
    let config = blobs.put(MediaType::ImageConfig, config.to_string()?.as_bytes())?;

    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(vec![layer])
        .annotations([(
            "org.opencontainers.image.title".to_owned(),
            "edge-filter".to_owned(),
        )])
        .build()?;
    let manifest = blobs.put(MediaType::ImageManifest, manifest.to_string()?.as_bytes())?;
    let manifest_digest = manifest.digest().to_string();
    let mut tagged = manifest;
    tagged.set_annotations(Some(
        [(
            "org.opencontainers.image.ref.name".to_owned(),
            tag.to_owned(),
        )]
        .into(),
    ));

    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![tagged])
        .build()?;
    fs::write(dir.join("index.json"), index.to_string()?)?;
    let layout = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()?;
    fs::write(dir.join("oci-layout"), layout.to_string()?)?;
    Ok(manifest_digest)
}

/// The layer's tar: one regular file, `plugin.wasm`, owned by root, dated the epoch.
fn layer_tar(wasm: &[u8]) -> Result<Vec<u8>> {
    let mut header = tar::Header::new_ustar();
    header.set_path(PLUGIN_FILE)?;
    header.set_size(u64::try_from(wasm.len())?);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, wasm)?;
    Ok(builder.into_inner()?)
}

/// Gzip with no name and a zero timestamp in its header.
fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut gz = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::best());
    gz.write_all(bytes)?;
    Ok(gz.finish()?)
}

/// `blobs/sha256/` of a layout.
struct Blobs(PathBuf);

impl Blobs {
    fn create(layout: &Path) -> Result<Self> {
        let dir = layout.join("blobs/sha256");
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }

    /// Stores `bytes`; the descriptor that names them.
    fn put(&self, media_type: MediaType, bytes: &[u8]) -> Result<Descriptor> {
        let hex = hex(&Sha256::digest(bytes));
        fs::write(self.0.join(&hex), bytes)?;
        let digest: Digest = format!("sha256:{hex}").parse()?;
        Ok(DescriptorBuilder::default()
            .media_type(media_type)
            .size(u64::try_from(bytes.len())?)
            .digest(digest)
            .build()?)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Read;

    use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

    use super::*;

    /// Every file under `dir`, by relative path.
    fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let rel = path.strip_prefix(dir).unwrap().display().to_string();
                    out.insert(rel, fs::read(&path).unwrap());
                }
            }
        }
        out
    }

    const MODULE: &[u8] = b"\0asm\x01\0\0\0 a filter's bytes";

    #[test]
    fn the_same_module_packages_to_the_same_bytes() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first = package(MODULE, a.path()).unwrap();
        // Later, elsewhere, over a previous run's output: the same digests, byte for byte.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        package(b"\0asm\x01\0\0\0 an older build", b.path()).unwrap();
        let second = package(MODULE, b.path()).unwrap();
        assert_eq!(first, second);
        assert_eq!(files(a.path()), files(b.path()));
        // Pinned: a change here means packaging stopped being reproducible across versions
        // of this tool (or of flate2's compressor), which republishes every release.
        assert_eq!(
            first.manifest_digest,
            "sha256:0b2c216a62ca45d46ba99f76664a5d01373023a7274ab677b4c26b7e04a57cab",
            "manifest digest drifted"
        );
        let other = package(b"\0asm\x01\0\0\0 another filter", b.path()).unwrap();
        assert_ne!(other.manifest_digest, first.manifest_digest);
        assert_ne!(other.wasm_sha256, first.wasm_sha256);
    }

    #[test]
    fn the_layout_is_the_compat_variant_with_plugin_wasm() {
        let dir = tempfile::tempdir().unwrap();
        let packaged = package(MODULE, dir.path()).unwrap();
        let out = dir.path();
        assert_eq!(
            fs::read_to_string(out.join("edge_filter.wasm.sha256")).unwrap(),
            format!("{}  edge_filter.wasm\n", packaged.wasm_sha256)
        );
        let layout = out.join("edge-filter-oci");
        let blob = |d: &Digest| fs::read(layout.join("blobs/sha256").join(d.digest())).unwrap();
        let index = ImageIndex::from_file(layout.join("index.json")).unwrap();
        let [entry] = index.manifests().as_slice() else {
            panic!("one manifest")
        };
        assert_eq!(entry.digest().to_string(), packaged.manifest_digest);
        assert_eq!(
            entry.annotations().as_ref().unwrap()["org.opencontainers.image.ref.name"],
            version().unwrap()
        );
        let manifest = ImageManifest::from_reader(&blob(entry.digest())[..]).unwrap();
        let [layer] = manifest.layers().as_slice() else {
            panic!("the compat variant has exactly one layer")
        };
        assert_eq!(layer.media_type(), &MediaType::ImageLayerGzip);
        let gz = blob(layer.digest());
        assert_eq!(gz.len() as u64, layer.size());
        let mut tar_bytes = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut tar_bytes)
            .unwrap();
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let mut entries: Vec<(String, Vec<u8>)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut body = Vec::new();
                e.read_to_end(&mut body).unwrap();
                (e.path().unwrap().display().to_string(), body)
            })
            .collect();
        assert_eq!(entries.len(), 1);
        let (name, body) = entries.remove(0);
        assert_eq!((name.as_str(), body.as_slice()), (PLUGIN_FILE, MODULE));
        let config =
            ImageConfiguration::from_reader(&blob(manifest.config().digest())[..]).unwrap();
        assert_eq!(
            config.rootfs().diff_ids(),
            &vec![format!("sha256:{}", hex(&Sha256::digest(&tar_bytes)))]
        );
        assert!(config.created().is_none());
        assert!(fs::read_to_string(layout.join("oci-layout"))
            .unwrap()
            .contains("\"imageLayoutVersion\":\"1.0.0\""));
    }
}
