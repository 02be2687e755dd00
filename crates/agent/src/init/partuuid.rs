//! `root=PARTUUID=...` as the kernel resolves it: the partition whose partition table
//! UUID matches, on any whole disk in `/sys/block`.
//!
//! * MBR (`msdos`): the disk signature (4 bytes at offset 440, little-endian) as
//!   `%08x`, then `-%02x` with the partition number: primary partitions 1–4, logical
//!   ones from 5 on, found by following each extended partition's chain of extended
//!   boot records as the kernel does.
//! * GPT: the partition's unique GUID in its text form (mixed-endian, as
//!   `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`). The primary header (LBA 1) is used when
//!   its CRCs are right, else the backup header at the last LBA, as the kernel does.
//!
//! Matching is case-insensitive. `PARTUUID=<uuid>/PARTNROFF=<n>` names the partition
//! `n` numbers after (or before, if negative) the matching one.
//!
//! The table parsing is pure (it reads through a callback) and never panics on
//! malformed or short data; [`resolve`] does the I/O.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// A parsed `PARTUUID=` root specification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The UUID as given (matched case-insensitively).
    pub uuid: String,
    /// `/PARTNROFF=n`: the partition number offset from the matching partition.
    pub offset: i32,
}

/// Parses a root device string: `Ok(None)` when it is not `PARTUUID=...`, an error
/// message when it is but is malformed.
pub fn parse_spec(root: &str) -> Result<Option<Spec>, String> {
    let Some(rest) = root.strip_prefix("PARTUUID=") else {
        return Ok(None);
    };
    let (uuid, offset) = match rest.split_once('/') {
        None => (rest, 0),
        Some((uuid, suffix)) => {
            let n = suffix
                .strip_prefix("PARTNROFF=")
                .and_then(|n| n.parse::<i32>().ok())
                .ok_or_else(|| {
                    format!("root={root}: expected PARTUUID=<uuid>/PARTNROFF=<number>")
                })?;
            (uuid, n)
        }
    };
    // The kernel's UUID buffer holds 36 characters; MBR ones are 11.
    if uuid.is_empty()
        || uuid.len() > 36
        || !uuid.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
    {
        return Err(format!(
            "root={root}: {uuid:?} is not a partition UUID (hex digits and dashes)"
        ));
    }
    Ok(Some(Spec {
        uuid: uuid.to_string(),
        offset,
    }))
}

/// Reads up to `len` bytes at byte `offset` of a disk; fewer (possibly none) at the end
/// of the disk or on an error.
pub type ReadAt<'a> = dyn FnMut(u64, usize) -> Vec<u8> + 'a;

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// CRC-32 (IEEE 802.3, reflected, as GPT uses).
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// The GUID in `b` (16 bytes) in its text form: the first three fields little-endian.
pub fn guid_text(b: &[u8; 16]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

const MBR_SIG_AT: usize = 440;
/// Partition types the kernel follows as extended partitions (DOS, Windows LBA, Linux).
const MBR_EXTENDED: [u8; 3] = [0x05, 0x0f, 0x85];
/// Logical partitions are numbered from here.
const MBR_FIRST_LOGICAL: u32 = 5;
/// At most this many MBR partitions in all, as the kernel (DISK_MAX_PARTS - 1).
const MBR_MAX_PARTS: u32 = 255;
/// Extended boot records read in a row without finding a partition before giving up
/// (the kernel's limit on a looping chain).
const MBR_MAX_EMPTY_EBRS: u32 = 100;
const MBR_TABLE_AT: usize = 446;
const GPT_PROTECTIVE: u8 = 0xEE;
/// At most this many GPT partitions, as the kernel (DISK_MAX_PARTS - 1).
const GPT_MAX_PARTS: u32 = 255;
/// Refuse partition entry arrays larger than this (the usual one is 16 KiB).
const GPT_MAX_ARRAY: u64 = 1 << 20;
const GPT_ENTRY_SIZE: u32 = 128;

/// The four primary entries of an MBR in `sector0`: (type, first LBA, sectors) by
/// slot; `None` without the 0x55AA signature, or if a boot indicator is neither 0 nor
/// 0x80 (not a partition table, as the kernel judges).
fn mbr_entries(sector0: &[u8]) -> Option<[(u8, u32, u32); 4]> {
    if sector0.get(510..512)? != [0x55, 0xAA] {
        return None;
    }
    let mut out = [(0u8, 0u32, 0u32); 4];
    for (i, slot) in out.iter_mut().enumerate() {
        let e = sector0.get(MBR_TABLE_AT + 16 * i..MBR_TABLE_AT + 16 * (i + 1))?;
        if e[0] != 0 && e[0] != 0x80 {
            return None;
        }
        *slot = (e[4], le32(e, 8)?, le32(e, 12)?);
    }
    Some(out)
}

/// The MBR partitions in `sector0` as (number, PARTUUID): primary partitions with a
/// size, none for a protective MBR (the disk is GPT) or no table at all.
pub fn mbr_partitions(sector0: &[u8]) -> Vec<(u32, String)> {
    let (Some(entries), Some(sig)) = (mbr_entries(sector0), le32(sector0, MBR_SIG_AT)) else {
        return Vec::new();
    };
    if entries.iter().any(|e| e.0 == GPT_PROTECTIVE) {
        return Vec::new();
    }
    entries
        .iter()
        .zip(1u32..)
        .filter(|(e, _)| e.0 != 0 && e.2 != 0)
        .map(|(_, n)| (n, format!("{sig:08x}-{n:02x}")))
        .collect()
}

/// The GPT partitions (number, unique GUID text) from the header at `lba`, if that
/// header and its entry array are valid.
fn gpt_at(read: &mut ReadAt, sector: u64, lba: u64) -> Option<Vec<(u32, String)>> {
    let hdr = read(lba.checked_mul(sector)?, usize::try_from(sector).ok()?);
    if hdr.get(0..8)? != b"EFI PART" {
        return None;
    }
    let size = usize::try_from(le32(&hdr, 12)?).ok()?;
    if size < 92 || size > hdr.len() {
        return None;
    }
    let mut copy = hdr.get(..size)?.to_vec();
    copy.get_mut(16..20)?.fill(0);
    if crc32(&copy) != le32(&hdr, 16)? || le64(&hdr, 24)? != lba {
        return None;
    }
    let entries_lba = le64(&hdr, 72)?;
    let count = le32(&hdr, 80)?;
    let entry_size = le32(&hdr, 84)?;
    if entry_size != GPT_ENTRY_SIZE {
        return None;
    }
    let total = u64::from(count) * u64::from(entry_size);
    if total > GPT_MAX_ARRAY {
        return None;
    }
    let array = read(
        entries_lba.checked_mul(sector)?,
        usize::try_from(total).ok()?,
    );
    if array.len() as u64 != total || crc32(&array) != le32(&hdr, 88)? {
        return None;
    }
    let mut out = Vec::new();
    for (e, n) in array
        .chunks_exact(GPT_ENTRY_SIZE as usize)
        .zip(1u32..=GPT_MAX_PARTS)
    {
        let first = le64(e, 32)?;
        let last = le64(e, 40)?;
        if e[..16].iter().all(|&b| b == 0) || first > last {
            continue; // unused entry
        }
        let guid: [u8; 16] = e.get(16..32)?.try_into().ok()?;
        out.push((n, guid_text(&guid)));
    }
    Some(out)
}

/// The partitions (number, PARTUUID) of a disk read through `read`, with logical
/// sectors of `sector` bytes and `sectors` of them (for the backup GPT header), as the
/// kernel would find them; empty when there is no table it understands.
pub fn partitions(read: &mut ReadAt, sector: u64, sectors: Option<u64>) -> Vec<(u32, String)> {
    if !(512..=65536).contains(&sector) || !sector.is_power_of_two() {
        return Vec::new();
    }
    let sector0 = read(0, 512);
    let Some(entries) = mbr_entries(&sector0) else {
        return Vec::new();
    };
    if entries.iter().any(|e| e.0 == GPT_PROTECTIVE) {
        if let Some(p) = gpt_at(read, sector, 1) {
            return p;
        }
        if let Some(last) = sectors.and_then(|s| s.checked_sub(1)).filter(|&l| l > 1) {
            if let Some(p) = gpt_at(read, sector, last) {
                return p;
            }
        }
        return Vec::new();
    }
    let mut parts = mbr_partitions(&sector0);
    let sig = le32(&sector0, MBR_SIG_AT).unwrap_or(0);
    let mut next = MBR_FIRST_LOGICAL;
    for &(kind, start, len) in &entries {
        if len != 0 && MBR_EXTENDED.contains(&kind) {
            let extended = (u64::from(start), u64::from(len));
            parts.extend(mbr_logical(read, sector, extended, sig, &mut next));
        }
    }
    parts
}

/// The logical partitions (number, PARTUUID) of the extended partition at `first` for
/// `size` sectors, numbered from `*next` on: the chain of extended boot records that
/// starts there, as the kernel's msdos parser follows it (in each record, the data
/// partitions at offsets from the record, then the first extended entry, at an offset
/// from the extended partition's start, for the next record).
fn mbr_logical(
    read: &mut ReadAt,
    sector: u64,
    (first, size): (u64, u64),
    sig: u32,
    next: &mut u32,
) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let (mut this, mut this_size) = (first, size);
    let mut empty = 0;
    while *next <= MBR_MAX_PARTS && empty < MBR_MAX_EMPTY_EBRS {
        empty += 1;
        let Some(at) = this.checked_mul(sector) else {
            break;
        };
        let ebr = read(at, 512);
        let Some(entries) = mbr_entries(&ebr) else {
            break;
        };
        for (i, &(kind, start, len)) in entries.iter().enumerate() {
            if len == 0 || MBR_EXTENDED.contains(&kind) || *next > MBR_MAX_PARTS {
                continue;
            }
            let (start, len) = (u64::from(start), u64::from(len));
            let begin = this.saturating_add(start);
            // The third and fourth entries often hold garbage: only trusted inside.
            let inside = start + len <= this_size
                && begin >= first
                && begin + len <= first.saturating_add(size);
            if i >= 2 && !inside {
                continue;
            }
            out.push((*next, format!("{sig:08x}-{:02x}", *next)));
            *next += 1;
            empty = 0;
        }
        match entries
            .iter()
            .find(|e| e.2 != 0 && MBR_EXTENDED.contains(&e.0))
        {
            Some(&(_, start, len)) => {
                this = first.saturating_add(u64::from(start));
                this_size = u64::from(len);
            }
            None => break,
        }
    }
    out
}

/// The partition number `spec` names among `parts`, if any.
pub fn find(parts: &[(u32, String)], spec: &Spec) -> Option<u32> {
    let (n, _) = parts
        .iter()
        .find(|(_, u)| u.eq_ignore_ascii_case(&spec.uuid))?;
    let n = i64::from(*n) + i64::from(spec.offset);
    u32::try_from(n).ok().filter(|&n| n >= 1)
}

/// The device node of partition `n` of `disk`: `vda` → `vda1`, `nvme0n1` → `nvme0n1p1`.
pub fn partition_name(disk: &str, n: u32) -> String {
    if disk.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{disk}p{n}")
    } else {
        format!("{disk}{n}")
    }
}

/// A `/sys/block` entry's number, if it has one.
fn sys_u64(disk: &str, file: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/sys/block/{disk}/{file}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Looks for `spec` on every whole disk now in `/sys/block`; the partition's node
/// (`/dev/vda1`) if found.
fn scan(spec: &Spec) -> Option<String> {
    let mut disks: Vec<String> = std::fs::read_dir("/sys/block")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    disks.sort();
    for disk in disks {
        let Ok(f) = File::open(Path::new("/dev").join(&disk)) else {
            continue;
        };
        let sector = sys_u64(&disk, "queue/logical_block_size").unwrap_or(512);
        // /sys/block/*/size counts 512-byte sectors whatever the logical block size.
        let sectors = sys_u64(&disk, "size").map(|s| s.saturating_mul(512) / sector.max(1));
        let mut read = |at: u64, len: usize| {
            let mut buf = vec![0u8; len];
            let mut got = 0;
            while got < len {
                match f.read_at(&mut buf[got..], at + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            buf.truncate(got);
            buf
        };
        let parts = partitions(&mut read, sector, sectors);
        if let Some(n) = find(&parts, spec) {
            crate::debug!("PARTUUID={} is partition {n} of {disk}", spec.uuid);
            return Some(format!("/dev/{}", partition_name(&disk, n)));
        }
    }
    None
}

/// Resolves `spec` to a device node that exists, scanning the disks until `deadline`
/// (the disk, its table or the partition node may show up late).
pub fn resolve(spec: &Spec, deadline: Instant) -> io::Result<String> {
    let mut found = None;
    loop {
        if found.is_none() {
            found = scan(spec);
        }
        if let Some(dev) = &found {
            if Path::new(dev).exists() {
                return Ok(dev.clone());
            }
        }
        if Instant::now() > deadline {
            let what = match &found {
                Some(dev) => format!("PARTUUID={} is {dev}, which did not appear", spec.uuid),
                None => format!("no partition with PARTUUID={} on any disk", spec.uuid),
            };
            return Err(io::Error::new(io::ErrorKind::NotFound, what));
        }
        std::thread::sleep(Duration::from_millis(if found.is_some() { 10 } else { 50 }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(img: &[u8]) -> impl FnMut(u64, usize) -> Vec<u8> + '_ {
        move |at, len| {
            let Ok(at) = usize::try_from(at) else {
                return Vec::new();
            };
            let start = at.min(img.len());
            let end = at.saturating_add(len).min(img.len());
            img[start..end].to_vec()
        }
    }

    fn parts_of(img: &[u8]) -> Vec<(u32, String)> {
        let mut r = reader(img);
        partitions(&mut r, 512, Some(img.len() as u64 / 512))
    }

    /// An MBR with signature 0x0eaa91a0 and `types` in the primary slots (size 100).
    fn mbr(types: [u8; 4]) -> Vec<u8> {
        let mut s = vec![0u8; 512];
        s[440..444].copy_from_slice(&0x0eaa_91a0u32.to_le_bytes());
        for (i, t) in types.iter().enumerate() {
            let e = &mut s[446 + 16 * i..446 + 16 * (i + 1)];
            e[4] = *t;
            if *t != 0 {
                e[8..12].copy_from_slice(&(2048 + 100 * i as u32).to_le_bytes());
                e[12..16].copy_from_slice(&100u32.to_le_bytes());
            }
        }
        s[510] = 0x55;
        s[511] = 0xAA;
        s
    }

    const GUID: [u8; 16] = [
        0x78, 0x56, 0x34, 0x12, 0xbc, 0x9a, 0xf0, 0xde, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd,
        0xef,
    ];
    const GUID_TEXT: &str = "12345678-9abc-def0-0123-456789abcdef";

    /// A 64-sector GPT disk whose entry 3 (of 128) holds `GUID`; primary and backup
    /// headers, correct CRCs.
    fn gpt() -> Vec<u8> {
        let sectors = 64u64;
        let mut img = mbr([GPT_PROTECTIVE, 0, 0, 0]);
        img.resize(sectors as usize * 512, 0);
        let mut array = vec![0u8; 128 * 128];
        let e = &mut array[2 * 128..3 * 128];
        e[0] = 0xaf; // some type GUID
        e[16..32].copy_from_slice(&GUID);
        e[32..40].copy_from_slice(&40u64.to_le_bytes());
        e[40..48].copy_from_slice(&50u64.to_le_bytes());
        img[2 * 512..2 * 512 + array.len()].copy_from_slice(&array);
        let header = |my: u64, alt: u64| {
            let mut h = vec![0u8; 92];
            h[0..8].copy_from_slice(b"EFI PART");
            h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
            h[12..16].copy_from_slice(&92u32.to_le_bytes());
            h[24..32].copy_from_slice(&my.to_le_bytes());
            h[32..40].copy_from_slice(&alt.to_le_bytes());
            h[72..80].copy_from_slice(&2u64.to_le_bytes());
            h[80..84].copy_from_slice(&128u32.to_le_bytes());
            h[84..88].copy_from_slice(&128u32.to_le_bytes());
            h[88..92].copy_from_slice(&crc32(&array).to_le_bytes());
            let c = crc32(&h);
            h[16..20].copy_from_slice(&c.to_le_bytes());
            h
        };
        img[512..512 + 92].copy_from_slice(&header(1, sectors - 1));
        let last = (sectors as usize - 1) * 512;
        img[last..last + 92].copy_from_slice(&header(sectors - 1, 1));
        img
    }

    /// `entries` (type, first sector, sectors) written into the table of the 512-byte
    /// record at sector `at` of `img`, with the boot signature.
    fn record(img: &mut Vec<u8>, at: usize, entries: &[(u8, u32, u32)]) {
        if img.len() < (at + 1) * 512 {
            img.resize((at + 1) * 512, 0);
        }
        let s = &mut img[at * 512..(at + 1) * 512];
        for (i, &(t, start, len)) in entries.iter().enumerate() {
            let e = &mut s[446 + 16 * i..446 + 16 * (i + 1)];
            e[4] = t;
            e[8..12].copy_from_slice(&start.to_le_bytes());
            e[12..16].copy_from_slice(&len.to_le_bytes());
        }
        s[510] = 0x55;
        s[511] = 0xAA;
    }

    #[test]
    fn logical_partitions_follow_the_extended_chain_and_a_loop_ends() {
        let mut img = mbr([0x83, 0, 0, 0]);
        // Slot 2: an extended partition at sector 100 for 400 sectors.
        record(&mut img, 0, &[(0x83, 2048, 100), (0x05, 100, 400)]);
        // First EBR: a data partition 10 sectors in, and the next EBR 200 sectors
        // into the extended partition.
        record(&mut img, 100, &[(0x83, 10, 50), (0x05, 200, 100)]);
        // Second EBR: one more data partition, no next one.
        record(&mut img, 300, &[(0x83, 10, 60)]);
        img.resize(600 * 512, 0);
        let sig = "0eaa91a0";
        let want: Vec<(u32, String)> = [1, 2, 5, 6]
            .iter()
            .map(|&n| (n, format!("{sig}-{n:02x}")))
            .collect();
        assert_eq!(parts_of(&img), want);
        let spec = parse_spec("PARTUUID=0EAA91A0-06").unwrap().unwrap();
        assert_eq!(find(&parts_of(&img), &spec), Some(6));

        // A chain that points back at itself ends: its data partition is counted
        // until the partition numbers run out, as in the kernel.
        record(&mut img, 300, &[(0x83, 10, 60), (0x0f, 200, 100)]);
        let parts = parts_of(&img);
        assert_eq!(
            parts.len() as u32,
            2 + (MBR_MAX_PARTS - MBR_FIRST_LOGICAL + 1)
        );
        assert_eq!(parts.last().unwrap().0, MBR_MAX_PARTS);
        // An EBR with only an extended entry pointing at itself: no partitions, and
        // the walk stops after MBR_MAX_EMPTY_EBRS records.
        record(&mut img, 100, &[(0, 0, 0), (0x05, 0, 400)]);
        assert_eq!(
            parts_of(&img).iter().map(|p| p.0).collect::<Vec<_>>(),
            [1, 2]
        );
        // Garbage in the third and fourth slots outside the extended partition is
        // ignored.
        record(
            &mut img,
            100,
            &[(0x83, 10, 50), (0, 0, 0), (0x83, 10, 5000)],
        );
        assert_eq!(
            parts_of(&img).iter().map(|p| p.0).collect::<Vec<_>>(),
            [1, 2, 5]
        );
    }

    #[test]
    fn specs_parse() {
        assert_eq!(parse_spec("/dev/vda"), Ok(None));
        assert_eq!(
            parse_spec("PARTUUID=0eaa91a0-01"),
            Ok(Some(Spec {
                uuid: "0eaa91a0-01".into(),
                offset: 0
            }))
        );
        assert_eq!(
            parse_spec("PARTUUID=0EAA91A0-01/PARTNROFF=-1"),
            Ok(Some(Spec {
                uuid: "0EAA91A0-01".into(),
                offset: -1
            }))
        );
        assert!(parse_spec("PARTUUID=").is_err());
        assert!(parse_spec("PARTUUID=xyz").is_err());
        assert!(parse_spec("PARTUUID=0eaa91a0-01/PARTNROFF=").is_err());
        assert!(parse_spec("PARTUUID=0eaa91a0-01/FOO=1").is_err());
        assert!(parse_spec(&format!("PARTUUID={GUID_TEXT}0")).is_err());
    }

    #[test]
    fn crc32_is_ieee() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn guids_are_mixed_endian() {
        assert_eq!(guid_text(&GUID), GUID_TEXT);
    }

    #[test]
    fn mbr_partuuids_are_signature_and_slot() {
        let img = mbr([0x83, 0, 0x05, 0x0c]);
        assert_eq!(
            parts_of(&img),
            vec![
                (1, "0eaa91a0-01".to_string()),
                (3, "0eaa91a0-03".to_string()),
                (4, "0eaa91a0-04".to_string())
            ]
        );
        let p = parts_of(&img);
        let spec = |u: &str, offset| Spec {
            uuid: u.into(),
            offset,
        };
        assert_eq!(find(&p, &spec("0EAA91A0-03", 0)), Some(3));
        assert_eq!(find(&p, &spec("0eaa91a0-03", 1)), Some(4));
        assert_eq!(find(&p, &spec("0eaa91a0-01", -1)), None);
        assert_eq!(find(&p, &spec("0eaa91a0-02", 0)), None);
        assert_eq!(find(&p, &spec("0eaa91a1-01", 0)), None);
    }

    #[test]
    fn mbr_with_a_zero_sized_entry_skips_it() {
        let mut img = mbr([0x83, 0x83, 0, 0]);
        img[446 + 16 + 12..446 + 32].fill(0);
        assert_eq!(parts_of(&img), vec![(1, "0eaa91a0-01".to_string())]);
    }

    #[test]
    fn no_table_no_partitions() {
        // No 0x55AA.
        let mut img = mbr([0x83, 0, 0, 0]);
        img[511] = 0;
        assert!(parts_of(&img).is_empty());
        // A bad boot indicator: not a partition table (e.g. a filesystem's boot sector).
        let mut img = mbr([0x83, 0, 0, 0]);
        img[446] = 0x12;
        assert!(parts_of(&img).is_empty());
        // Garbage, empty and short disks.
        let garbage: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        assert!(parts_of(&garbage).is_empty());
        assert!(parts_of(&[]).is_empty());
        assert!(parts_of(&mbr([0x83, 0, 0, 0])[..511]).is_empty());
        assert!(mbr_partitions(&[]).is_empty());
        // A sector size the kernel would not use.
        let img = mbr([0x83, 0, 0, 0]);
        let mut r = reader(&img);
        assert!(partitions(&mut r, 100, None).is_empty());
    }

    #[test]
    fn gpt_partuuid_is_the_unique_guid() {
        let img = gpt();
        assert_eq!(parts_of(&img), vec![(3, GUID_TEXT.to_string())]);
        let spec = Spec {
            uuid: GUID_TEXT.to_uppercase(),
            offset: 0,
        };
        assert_eq!(find(&parts_of(&img), &spec), Some(3));
        // The protective MBR's own slots are not MBR partitions.
        assert!(mbr_partitions(&img[..512]).is_empty());
    }

    #[test]
    fn gpt_falls_back_to_the_backup_header() {
        let mut img = gpt();
        img[512 + 30] ^= 1; // primary header CRC now wrong
        assert_eq!(parts_of(&img), vec![(3, GUID_TEXT.to_string())]);
        // Without the disk size there is no backup to find.
        let mut r = reader(&img);
        assert!(partitions(&mut r, 512, None).is_empty());
        // A broken entry array (both headers' CRC of it fails): nothing.
        let mut img = gpt();
        img[2 * 512 + 300] ^= 1;
        assert!(parts_of(&img).is_empty());
    }

    #[test]
    fn malformed_gpt_headers_are_ignored() {
        for (at, value) in [
            (12usize, 8u32),   // header size too small
            (12, 100_000),     // header size beyond the sector
            (84, 64),          // entry size the kernel does not use
            (80, 0x1000_0000), // absurd entry count
        ] {
            let mut img = gpt();
            for h in [512usize, 63 * 512] {
                img[h + at..h + at + 4].copy_from_slice(&value.to_le_bytes());
                // Keep the header CRC right so that only the field is at fault.
                img[h + 16..h + 20].fill(0);
                let size = (le32(&img[h..], 12).unwrap() as usize).clamp(92, 512);
                let c = crc32(&img[h..h + size]);
                img[h + 16..h + 20].copy_from_slice(&c.to_le_bytes());
            }
            assert!(parts_of(&img).is_empty(), "field at {at} = {value}");
        }
        // Entry array LBA beyond the disk: short read, nothing.
        let mut img = gpt();
        for h in [512usize, 63 * 512] {
            img[h + 72..h + 80].copy_from_slice(&u64::MAX.to_le_bytes());
            img[h + 16..h + 20].fill(0);
            let c = crc32(&img[h..h + 92]);
            img[h + 16..h + 20].copy_from_slice(&c.to_le_bytes());
        }
        assert!(parts_of(&img).is_empty());
        // Truncated after the primary header.
        let img = gpt();
        assert!(parts_of(&img[..1024]).is_empty());
    }

    #[test]
    fn partition_nodes_are_named_as_the_kernel_does() {
        assert_eq!(partition_name("vda", 1), "vda1");
        assert_eq!(partition_name("nvme0n1", 2), "nvme0n1p2");
        assert_eq!(partition_name("mmcblk0", 1), "mmcblk0p1");
    }
}
