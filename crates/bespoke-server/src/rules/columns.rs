//! Item attributes stored by column, for predicates evaluated over every candidate.
//!
//! Each (attribute name, type) pair has one column, a `Vec` indexed by item id with a sentinel
//! for "missing": numbers `f64` (NaN), strings `u32` ids into one interner ([`NO_STR`]),
//! booleans `u8` ([`NO_BOOL`]), timestamps `i64` ([`NO_TIME`]) and string lists as boxed
//! slices of ids (`None`). A column is shorter than the id space until an item past its end
//! gets a value; reads past the end are missing. Columns are only ever added, so the indices
//! a [`super::Compiled`] holds stay valid; [`Columns::generation`] counts the additions.
//!
//! The built-ins are ordinary columns created up front: `item` is string column 0,
//! `category`/`categories` list column 0, `available` bool column 0, `created_at` and
//! `updated_at` time columns 0 and 1. Item fields with those names are shadowed.

use bespoke_store::Item;
use rustc_hash::FxHashMap;
use serde_json::Value;

/// A string id that no item holds.
pub(crate) const NO_STR: u32 = u32::MAX;
/// A string id for a literal no item has ever had: it matches nothing.
pub(crate) const UNSEEN_STR: u32 = u32::MAX - 1;
/// A string id meaning "compare by text": strings from the request context, which are not
/// interned (binding has no access to the columns).
pub(crate) const DYNAMIC: u32 = u32::MAX - 2;
/// The missing boolean.
pub(crate) const NO_BOOL: u8 = 2;
/// The missing timestamp.
pub(crate) const NO_TIME: i64 = i64::MIN;

/// Names of the built-in attributes, in the order error messages list them.
pub(crate) const BUILTINS: &[&str] = &[
    "item",
    "category",
    "categories",
    "available",
    "created_at",
    "updated_at",
];

/// The typed columns one attribute name has, by index into the per-type column lists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct AttrCols {
    pub(crate) num: Option<u32>,
    pub(crate) str: Option<u32>,
    pub(crate) bool: Option<u32>,
    pub(crate) time: Option<u32>,
    pub(crate) list: Option<u32>,
}

impl AttrCols {
    /// The types it has, for error messages (`a number or a string`).
    pub(crate) fn describe(&self) -> String {
        let names: Vec<&str> = [
            (self.num.is_some(), "a number"),
            (self.str.is_some(), "a string"),
            (self.bool.is_some(), "a boolean"),
            (self.time.is_some(), "a timestamp"),
            (self.list.is_some(), "a list of strings"),
        ]
        .into_iter()
        .filter_map(|(has, n)| has.then_some(n))
        .collect();
        names.join(" or ")
    }
}

/// Columnar item attributes, indexed by store item id (`ItemIdx.0`). See the module doc for
/// the layout.
///
/// Store ids are dense, so every column is a plain `Vec` as long as the largest id set in it:
/// memory is about (largest id) × (columns) × (4 to 16 bytes).
#[derive(Debug, Clone)]
pub struct Columns {
    names: FxHashMap<Box<str>, AttrCols>,
    strings: FxHashMap<Box<str>, u32>,
    string_list: Vec<Box<str>>,
    pub(crate) nums: Vec<Vec<f64>>,
    pub(crate) strs: Vec<Vec<u32>>,
    pub(crate) bools: Vec<Vec<u8>>,
    pub(crate) times: Vec<Vec<i64>>,
    pub(crate) lists: Vec<Vec<Option<Box<[u32]>>>>,
    generation: u64,
    /// Saved rules' expressions kept evaluated, updated with every item change.
    pub(super) precomputed: super::precompute::Precomputed,
}

impl Default for Columns {
    fn default() -> Self {
        Self::new()
    }
}

/// Writes `v` at `idx`, growing the column with `missing` as needed.
fn put<T: Clone>(col: &mut Vec<T>, idx: u32, v: T, missing: T) {
    let idx = idx as usize;
    if col.len() <= idx {
        col.resize(idx + 1, missing);
    }
    col[idx] = v;
}

/// Marks `idx` missing, if the column reaches that far.
fn unset<T: Clone>(col: &mut [T], idx: u32, missing: T) {
    if let Some(slot) = col.get_mut(idx as usize) {
        *slot = missing;
    }
}

impl Columns {
    /// Empty columns with only the built-ins known.
    pub fn new() -> Self {
        let mut names = FxHashMap::default();
        let cols = |f: fn(&mut AttrCols)| {
            let mut c = AttrCols::default();
            f(&mut c);
            c
        };
        names.insert("item".into(), cols(|c| c.str = Some(0)));
        names.insert("category".into(), cols(|c| c.list = Some(0)));
        names.insert("categories".into(), cols(|c| c.list = Some(0)));
        names.insert("available".into(), cols(|c| c.bool = Some(0)));
        names.insert("created_at".into(), cols(|c| c.time = Some(0)));
        names.insert("updated_at".into(), cols(|c| c.time = Some(1)));
        Self {
            names,
            strings: FxHashMap::default(),
            string_list: Vec::new(),
            nums: Vec::new(),
            strs: vec![Vec::new()],
            bools: vec![Vec::new()],
            times: vec![Vec::new(), Vec::new()],
            lists: vec![Vec::new()],
            generation: 0,
            precomputed: Default::default(),
        }
    }

    /// Bumped whenever an attribute name or a type of one is seen for the first time, so that
    /// cached compilations (which resolved names against the older schema) are redone.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// How many distinct strings are interned; a compilation whose string literals were not
    /// all known is redone by [`super::Cache`] when this grows.
    pub(crate) fn strings_len(&self) -> usize {
        self.string_list.len()
    }

    /// The columns of attribute `name`, if any item ever had it (or it is a built-in).
    pub(crate) fn attr(&self, name: &str) -> Option<&AttrCols> {
        self.names.get(name)
    }

    /// Every known attribute name, sorted.
    pub(crate) fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.names.keys().map(|k| &**k).collect();
        v.sort_unstable();
        v
    }

    /// The id of an interned string, or [`UNSEEN_STR`].
    pub(crate) fn string_id(&self, s: &str) -> u32 {
        self.strings.get(s).copied().unwrap_or(UNSEEN_STR)
    }

    /// The text of an interned string id ("" for the sentinels).
    #[inline]
    pub(crate) fn string(&self, id: u32) -> &str {
        self.string_list.get(id as usize).map_or("", |s| s)
    }

    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.strings.get(s) {
            return id;
        }
        // The top three ids are sentinels; beyond that many strings, new ones are stored as
        // never-matching rather than panicking.
        let Ok(id) = u32::try_from(self.string_list.len()) else {
            return UNSEEN_STR;
        };
        if id >= DYNAMIC {
            return UNSEEN_STR;
        }
        self.string_list.push(s.into());
        self.strings.insert(s.into(), id);
        id
    }

    /// The columns of `name`, created empty when new; `kind` picks the slot to create.
    fn column(&mut self, name: &str, kind: Kind) -> u32 {
        let cols = self.names.entry(name.into()).or_default();
        let (slot, len) = match kind {
            Kind::Num => (&mut cols.num, self.nums.len()),
            Kind::Str => (&mut cols.str, self.strs.len()),
            Kind::Bool => (&mut cols.bool, self.bools.len()),
            Kind::Time => (&mut cols.time, self.times.len()),
            Kind::List => (&mut cols.list, self.lists.len()),
        };
        if let Some(c) = *slot {
            return c;
        }
        let c = len as u32;
        *slot = Some(c);
        match kind {
            Kind::Num => self.nums.push(Vec::new()),
            Kind::Str => self.strs.push(Vec::new()),
            Kind::Bool => self.bools.push(Vec::new()),
            Kind::Time => self.times.push(Vec::new()),
            Kind::List => self.lists.push(Vec::new()),
        }
        self.generation += 1;
        c
    }

    /// Stores `item` at `idx`, replacing every value it had.
    ///
    /// Sources by precedence: the built-ins; then `numeric` (numbers, NaN skipped) over numbers
    /// in `attributes`; `text` over strings in `attributes`. A string that parses as an RFC 3339
    /// date or date-time is a timestamp as well. Booleans and arrays of strings come from
    /// `attributes`; objects, `null` and other arrays are ignored.
    pub fn set_item(&mut self, idx: u32, item: &Item) {
        self.write_item(idx, item);
        self.refresh(idx);
    }

    /// How many item ids have been set (the largest plus one).
    pub(crate) fn item_slots(&self) -> usize {
        self.strs[0].len()
    }

    fn write_item(&mut self, idx: u32, item: &Item) {
        self.clear_values(idx);
        let key = self.intern(&item.key);
        put(&mut self.strs[0], idx, key, NO_STR);
        let cats: Box<[u32]> = item.categories.iter().map(|c| self.intern(c)).collect();
        put(&mut self.lists[0], idx, Some(cats), None);
        put(&mut self.bools[0], idx, item.available as u8, NO_BOOL);
        put(&mut self.times[0], idx, item.created_at, NO_TIME);
        put(&mut self.times[1], idx, item.updated_at, NO_TIME);
        for (name, v) in &item.attributes {
            if BUILTINS.contains(&name.as_str()) {
                continue;
            }
            match v {
                Value::Number(n) => {
                    if let Some(x) = n.as_f64().filter(|x| x.is_finite()) {
                        let c = self.column(name, Kind::Num);
                        put(&mut self.nums[c as usize], idx, x, f64::NAN);
                    }
                }
                Value::String(s) if !item.text.contains_key(name) => self.set_string(idx, name, s),
                Value::Bool(b) => {
                    let c = self.column(name, Kind::Bool);
                    put(&mut self.bools[c as usize], idx, *b as u8, NO_BOOL);
                }
                Value::Array(xs) if xs.iter().all(Value::is_string) => {
                    let ids: Box<[u32]> = xs
                        .iter()
                        .filter_map(Value::as_str)
                        .map(|s| self.intern(s))
                        .collect();
                    let c = self.column(name, Kind::List);
                    put(&mut self.lists[c as usize], idx, Some(ids), None);
                }
                _ => {}
            }
        }
        for (name, s) in &item.text {
            if !BUILTINS.contains(&name.as_str()) {
                self.set_string(idx, name, s);
            }
        }
        for (name, &x) in &item.numeric {
            if !BUILTINS.contains(&name.as_str()) && x.is_finite() {
                let c = self.column(name, Kind::Num);
                put(&mut self.nums[c as usize], idx, x, f64::NAN);
            }
        }
    }

    fn set_string(&mut self, idx: u32, name: &str, s: &str) {
        let id = self.intern(s);
        let c = self.column(name, Kind::Str);
        put(&mut self.strs[c as usize], idx, id, NO_STR);
        if let Some(t) = time_of(s) {
            let c = self.column(name, Kind::Time);
            put(&mut self.times[c as usize], idx, t, NO_TIME);
        }
    }

    /// Forgets every value of item `idx` (the item was deleted): all clauses on it are missing.
    pub fn clear_item(&mut self, idx: u32) {
        self.clear_values(idx);
        self.refresh(idx);
    }

    fn clear_values(&mut self, idx: u32) {
        self.nums.iter_mut().for_each(|c| unset(c, idx, f64::NAN));
        self.strs.iter_mut().for_each(|c| unset(c, idx, NO_STR));
        self.bools.iter_mut().for_each(|c| unset(c, idx, NO_BOOL));
        self.times.iter_mut().for_each(|c| unset(c, idx, NO_TIME));
        self.lists.iter_mut().for_each(|c| unset(c, idx, None));
    }
}

/// A string attribute's timestamp, when it is an RFC 3339 date or date-time.
pub(crate) fn time_of(s: &str) -> Option<i64> {
    // Cheap rejection first: most strings are not dates.
    if s.len() < 10 || !s.as_bytes()[0].is_ascii_digit() || s.as_bytes()[4] != b'-' {
        return None;
    }
    super::parse::parse_time(s).ok()
}

#[derive(Clone, Copy)]
enum Kind {
    Num,
    Str,
    Bool,
    Time,
    List,
}
