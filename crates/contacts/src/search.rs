//! Search as you type: matching, ranking and merging of duplicates, and the
//! in-memory index that answers a query in well under a millisecond.
//!
//! Pure code: no I/O. The store's FTS5 path ([`crate::Store::search`]) and
//! the in-memory [`SearchIndex`] both rank with [`rank`] and merge with
//! [`merge_duplicates`], so they give the same answer.

use std::{
    cmp::{Ordering, Reverse},
    collections::{BTreeMap, BinaryHeap, HashMap},
    ops::Bound,
};

use serde::{Deserialize, Serialize};

use crate::{
    fold::{self, Term},
    model::{Contact, ContactId, Source},
};

/// How well a contact matched a query: the weakest match over the query's
/// terms. Ordered best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchKind {
    /// Every term equals a whole word or a whole number.
    Exact,
    /// Every term is at least a prefix of a word or a number.
    Prefix,
    /// Some digits were found inside a number.
    Infix,
}

/// What search knows about a contact: its folded words, its numbers' digit
/// forms and its merge keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// The contact.
    pub id: ContactId,
    /// Its source (duplicates are merged only across sources).
    pub source: Source,
    /// Favourites rank first.
    pub favourite: bool,
    /// Folded display name: the order within one rank.
    pub sort_key: String,
    /// Folded name and organisation words.
    pub words: Vec<String>,
    /// Digit strings of its numbers (E.164 digits, national digits, digits
    /// as written).
    pub number_forms: Vec<String>,
    /// E.164 numbers and lower-case e-mail addresses.
    pub merge_keys: Vec<String>,
}

impl IndexEntry {
    /// The entry for a stored contact.
    #[must_use]
    pub fn from_contact(id: ContactId, contact: &Contact) -> Self {
        let mut words = contact.name_words();
        for w in contact.organization_words() {
            if !words.contains(&w) {
                words.push(w);
            }
        }
        let mut number_forms: Vec<String> = Vec::new();
        for n in &contact.numbers {
            for form in n.normalized().search_forms() {
                if form.len() <= FORM_DIGITS && !number_forms.contains(&form) {
                    number_forms.push(form);
                }
            }
        }
        Self {
            id,
            source: contact.source.clone(),
            favourite: contact.favourite,
            sort_key: fold::fold(&contact.display_name),
            words,
            number_forms,
            merge_keys: contact.merge_keys(),
        }
    }

    fn sort_prefix(&self) -> u64 {
        let mut bytes = [0u8; 8];
        for (b, s) in bytes.iter_mut().zip(self.sort_key.bytes()) {
            *b = s;
        }
        u64::from_be_bytes(bytes)
    }
}

/// How `term` matches `entry`, if at all.
#[must_use]
pub fn classify(term: &Term, entry: &IndexEntry) -> Option<MatchKind> {
    match term {
        Term::Word(w) => best(entry.words.iter().map(|word| word_match(w, word))),
        Term::Digits(d) => best(entry.number_forms.iter().map(|form| digits_match(d, form))),
    }
}

/// How a whole query (already split into terms) matches `entry`: every term
/// must match; the result is the weakest term's match. An empty query
/// matches nothing.
#[must_use]
pub fn classify_all(terms: &[Term], entry: &IndexEntry) -> Option<MatchKind> {
    if terms.is_empty() {
        return None;
    }
    let mut worst = MatchKind::Exact;
    for term in terms {
        worst = worst.max(classify(term, entry)?);
    }
    Some(worst)
}

/// Orders matches: favourites first, then exact before prefix before
/// infix, then by folded display name, then by id.
#[must_use]
pub fn rank(a: (&IndexEntry, MatchKind), b: (&IndexEntry, MatchKind)) -> Ordering {
    b.0.favourite
        .cmp(&a.0.favourite)
        .then(a.1.cmp(&b.1))
        .then_with(|| a.0.sort_prefix().cmp(&b.0.sort_prefix()))
        .then_with(|| a.0.sort_key.cmp(&b.0.sort_key))
        .then(a.0.id.cmp(&b.0.id))
}

/// One result of a search before the contacts are loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexHit {
    /// The contact shown.
    pub id: ContactId,
    /// How well it matched.
    pub kind: MatchKind,
    /// Contacts of other sources merged into it (same E.164 number or
    /// e-mail address), best ranked first.
    pub merged: Vec<ContactId>,
}

/// Merges ranked matches that share an E.164 number or an e-mail address
/// and come from different sources. A result takes at most one contact per
/// source, so a switchboard number shared by a whole directory does not fold
/// the directory into one result.
#[must_use]
pub fn merge_duplicates(ranked: &[(&IndexEntry, MatchKind)], limit: usize) -> Vec<IndexHit> {
    let mut hits: Vec<IndexHit> = Vec::new();
    let mut sources: Vec<Vec<&Source>> = Vec::new();
    let mut by_key: HashMap<&str, usize> = HashMap::new();
    for &(entry, kind) in ranked {
        let target = entry
            .merge_keys
            .iter()
            .filter_map(|k| by_key.get(k.as_str()).copied())
            .find(|&i| !sources[i].contains(&&entry.source));
        let index = match target {
            Some(i) => {
                hits[i].merged.push(entry.id);
                sources[i].push(&entry.source);
                i
            }
            None => {
                if hits.len() == limit {
                    continue;
                }
                hits.push(IndexHit {
                    id: entry.id,
                    kind,
                    merged: Vec::new(),
                });
                sources.push(vec![&entry.source]);
                hits.len() - 1
            }
        };
        for key in &entry.merge_keys {
            by_key.entry(key.as_str()).or_insert(index);
        }
    }
    hits
}

/// How many ranked candidates are merged to fill `limit` results.
pub(crate) fn candidate_budget(limit: usize) -> usize {
    limit.saturating_mul(3).saturating_add(8)
}

/// An in-memory search index over [`IndexEntry`]s.
///
/// Words and number forms sit in ordered maps (a prefix is a range); digits
/// inside numbers are found through trigram and 4-digit lists. Removing a contact only
/// frees its slot; the index compacts itself when half of it is free.
///
/// Slots are handed out in rank order when the index is built (favourites
/// first, then by name), so every posting list is in rank order too: a
/// one-word query reads only the first few entries of each list instead
/// of every match. Contacts added or (un)marked as favourites since are
/// checked one by one until there are enough of them to lay the index out
/// again.
#[derive(Debug, Default)]
pub struct SearchIndex {
    slots: Vec<Option<IndexEntry>>,
    // Per slot, dense (ranking touches thousands of candidates): whether it
    // is live, and its rank key without the match kind (see `rank_key`).
    alive: Vec<bool>,
    keys: Vec<u64>,
    by_id: HashMap<ContactId, u32>,
    words: BTreeMap<Box<str>, Vec<u32>>,
    // Word prefixes of up to `SHORT_PREFIX` characters: one list each, so
    // a query of a few letters does not walk thousands of words.
    short_prefixes: HashMap<Box<str>, Vec<u32>>,
    // (packed digit form, slot), sorted: see `pack_form`.
    forms: Vec<(u64, u32)>,
    // (packed E.164 digits, slot), sorted: caller lookups.
    numbers: Vec<(u64, u32)>,
    // Slots per digit trigram (codes 0..1000) and per 4-digit group (1000
    // plus its value): a query of 4 digits or more reads the latter, far
    // fewer of which share a number's digits by chance.
    grams: Vec<Vec<u32>>,
    live: usize,
    // Slots below `ordered` are in rank order as built, those below
    // `fav_end` favourites; `moved` marks the ones whose favourite mark
    // changed since. `unordered` lists those and the slots added since;
    // their words and forms are copied into one buffer (`side_text`,
    // ranges per slot), so checking them one by one reads memory in order.
    ordered: u32,
    fav_end: u32,
    moved: Vec<bool>,
    unordered: Vec<u32>,
    side_words: Vec<(u32, u32, u32)>,
    side_forms: Vec<(u32, u32, u32)>,
    side_text: String,
}

/// Word prefixes up to this many characters have their own posting list.
const SHORT_PREFIX: usize = 3;

const GRAMS: usize = 11_000;

impl SearchIndex {
    /// An empty index.
    #[must_use]
    pub fn new() -> Self {
        Self {
            grams: vec![Vec::new(); GRAMS],
            ..Self::default()
        }
    }

    /// An index over `entries`.
    #[must_use]
    pub fn from_entries(entries: impl IntoIterator<Item = IndexEntry>) -> Self {
        let mut entries: Vec<IndexEntry> = entries.into_iter().collect();
        entries.sort_by(|a, b| rank((a, MatchKind::Exact), (b, MatchKind::Exact)));
        let mut index = Self::new();
        for entry in entries {
            index.insert_unsorted(entry);
        }
        index.forms.sort_unstable();
        index.numbers.sort_unstable();
        index.ordered = u32::try_from(index.slots.len()).unwrap_or(u32::MAX);
        let favourites = index
            .slots
            .iter()
            .take_while(|s| s.as_ref().is_some_and(|e| e.favourite))
            .count();
        index.fav_end = u32::try_from(favourites).unwrap_or(u32::MAX);
        index.unordered.clear();
        index
    }

    /// How many contacts it holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether it holds no contact.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The entry of a contact.
    #[must_use]
    pub fn get(&self, id: ContactId) -> Option<&IndexEntry> {
        let slot = *self.by_id.get(&id)?;
        self.slots.get(slot as usize)?.as_ref()
    }

    /// Adds a contact, replacing its previous entry.
    pub fn insert(&mut self, entry: IndexEntry) {
        // Removing first: it may compact the index, which renumbers slots.
        self.remove(entry.id);
        let (forms, numbers) = (self.forms.len(), self.numbers.len());
        let slots = self.slots.len();
        self.insert_unsorted(entry);
        // Move the new forms into place; one contact adds a handful.
        for (list, start) in [(&mut self.forms, forms), (&mut self.numbers, numbers)] {
            let added: Vec<(u64, u32)> = list.drain(start..).collect();
            for form in added {
                let at = list.partition_point(|f| *f < form);
                list.insert(at, form);
            }
        }
        if self.slots.len() > slots
            && let Ok(slot) = u32::try_from(slots)
        {
            self.push_unordered(slot);
        }
    }

    fn insert_unsorted(&mut self, entry: IndexEntry) {
        self.remove(entry.id);
        if self.grams.len() != GRAMS {
            self.grams = vec![Vec::new(); GRAMS];
        }
        let Ok(slot) = u32::try_from(self.slots.len()) else {
            return;
        };
        for word in &entry.words {
            push_posting(&mut self.words, word, slot);
            for n in 1..=SHORT_PREFIX {
                if let Some((end, _)) = word.char_indices().nth(n) {
                    push_short(&mut self.short_prefixes, &word[..end], slot);
                } else {
                    push_short(&mut self.short_prefixes, word, slot);
                    break;
                }
            }
        }
        for key in &entry.merge_keys {
            if let Some(packed) = key.strip_prefix('+').and_then(pack_form) {
                self.numbers.push((packed, slot));
            }
        }
        let mut grams: Vec<usize> = Vec::new();
        for form in &entry.number_forms {
            if let Some(packed) = pack_form(form) {
                self.forms.push((packed, slot));
            }
            grams.extend(digit_grams(form, 3));
            grams.extend(digit_grams(form, 4));
        }
        grams.sort_unstable();
        grams.dedup();
        for gram in grams {
            self.grams[gram].push(slot);
        }
        self.by_id.insert(entry.id, slot);
        self.alive.push(true);
        self.moved.push(false);
        self.keys.push(base_key(&entry));
        self.slots.push(Some(entry));
        self.live += 1;
    }

    /// Removes a contact; returns whether it was there.
    pub fn remove(&mut self, id: ContactId) -> bool {
        let Some(slot) = self.by_id.remove(&id) else {
            return false;
        };
        if let Some(s) = self.slots.get_mut(slot as usize) {
            *s = None;
        }
        if let Some(a) = self.alive.get_mut(slot as usize) {
            *a = false;
        }
        self.live -= 1;
        if self.slots.len() > 1024 && self.live < self.slots.len() / 2 {
            self.compact();
        }
        true
    }

    /// Sets a contact's favourite flag.
    pub fn set_favourite(&mut self, id: ContactId, favourite: bool) {
        if let Some(&slot) = self.by_id.get(&id)
            && let Some(Some(entry)) = self.slots.get_mut(slot as usize)
        {
            if entry.favourite == favourite {
                return;
            }
            entry.favourite = favourite;
            let key = base_key(entry);
            if let Some(k) = self.keys.get_mut(slot as usize) {
                *k = key;
            }
            if slot < self.ordered
                && let Some(moved) = self.moved.get_mut(slot as usize)
                && !*moved
            {
                *moved = true;
                self.push_unordered(slot);
            }
        }
    }

    /// The contact that has `e164` (`+` and digits) among its numbers:
    /// favourites first, then local contacts, then the oldest.
    #[must_use]
    pub fn by_number(&self, e164: &str) -> Option<ContactId> {
        let packed = pack_form(e164.strip_prefix('+')?)?;
        let start = self.numbers.partition_point(|n| n.0 < packed);
        self.numbers[start..]
            .iter()
            .take_while(|n| n.0 == packed)
            .filter_map(|&(_, slot)| self.slots.get(slot as usize)?.as_ref())
            .max_by_key(|e| (e.favourite, e.source.is_local(), Reverse(e.id)))
            .map(|e| e.id)
    }

    /// Records a slot out of rank order; lays the index out again once
    /// there are more than a few percent of them.
    fn push_unordered(&mut self, slot: u32) {
        if self.unordered.len() >= (self.live / 64).max(64) {
            self.compact();
            return;
        }
        self.unordered.push(slot);
        let Some(Some(entry)) = self.slots.get(slot as usize) else {
            return;
        };
        let text = &mut self.side_text;
        for (texts, side) in [
            (&entry.words, &mut self.side_words),
            (&entry.number_forms, &mut self.side_forms),
        ] {
            for t in texts {
                let start = u32::try_from(text.len()).unwrap_or(u32::MAX);
                text.push_str(t);
                let end = u32::try_from(text.len()).unwrap_or(u32::MAX);
                side.push((slot, start, end));
            }
        }
    }

    /// Whether a slot below `ordered` is live and still in rank order.
    fn in_order(&self, slot: u32) -> bool {
        self.alive.get(slot as usize).copied().unwrap_or(false)
            && !self.moved.get(slot as usize).copied().unwrap_or(true)
    }

    fn compact(&mut self) {
        let entries: Vec<IndexEntry> = std::mem::take(&mut self.slots)
            .into_iter()
            .flatten()
            .collect();
        *self = Self::from_entries(entries);
    }

    /// The best `limit` results for `query`, duplicates merged.
    #[must_use]
    pub fn search(&self, query: &str, limit: usize) -> Vec<IndexHit> {
        let terms = fold::query_terms(query);
        if terms.is_empty() || limit == 0 {
            return Vec::new();
        }
        let mut scratch = vec![0u8; self.slots.len()];
        let mut candidates: Option<Vec<(u32, MatchKind)>> = None;
        let budget = candidate_budget(limit);
        let several = if let [term] = terms.as_slice() {
            candidates = Some(self.first_matches(term, &mut scratch, budget));
            &[][..]
        } else {
            terms.as_slice()
        };
        for term in several {
            let matched = self.term_matches(term, &mut scratch);
            candidates = Some(match candidates {
                None => matched,
                Some(mut previous) => {
                    for &(slot, kind) in &matched {
                        scratch[slot as usize] = code(kind);
                    }
                    previous.retain_mut(|(slot, kind)| match decode(scratch[*slot as usize]) {
                        Some(k) => {
                            *kind = (*kind).max(k);
                            true
                        }
                        None => false,
                    });
                    for &(slot, _) in &matched {
                        scratch[slot as usize] = 0;
                    }
                    previous
                }
            });
        }
        // Rank by a dense integer key first (favourite, kind, first bytes
        // of the name); only the best `budget` (and ties at the cut) are
        // ordered by the full rule.
        let mut keyed: Vec<(u64, u32, MatchKind)> = candidates
            .unwrap_or_default()
            .into_iter()
            .map(|(slot, kind)| (self.keys[slot as usize] | kind_bits(kind), slot, kind))
            .collect();
        if keyed.len() > budget {
            keyed.select_nth_unstable_by_key(budget - 1, |k| k.0);
            let cut = keyed[budget - 1].0;
            let ties: Vec<(u64, u32, MatchKind)> = keyed[budget..]
                .iter()
                .filter(|k| k.0 == cut)
                .copied()
                .collect();
            keyed.truncate(budget);
            keyed.extend(ties);
        }
        let mut ranked: Vec<(&IndexEntry, MatchKind)> = keyed
            .into_iter()
            .filter_map(|(_, slot, kind)| Some((self.slots.get(slot as usize)?.as_ref()?, kind)))
            .collect();
        ranked.sort_unstable_by(|a, b| rank(*a, *b));
        ranked.truncate(budget);
        merge_duplicates(&ranked, limit)
    }

    /// The live slots matching a one-term query that can be among its best
    /// `budget`, each once with its best match; `scratch` is all zeros on
    /// entry and on return.
    ///
    /// In a posting list in rank order, a slot behind `budget` others of
    /// the same favourite mark that matched at least as well cannot be among
    /// the best `budget`: each list is read, per favourite mark, only until
    /// `budget` matches. Slots out of rank order are checked one by one.
    fn first_matches(
        &self,
        term: &Term,
        scratch: &mut [u8],
        budget: usize,
    ) -> Vec<(u32, MatchKind)> {
        let mut touched: Vec<u32> = Vec::new();
        match term {
            Term::Word(w) => {
                let budget = [budget; 2];
                if let Some(list) = self.words.get(w.as_str()) {
                    self.take_first(
                        list.iter().copied(),
                        budget,
                        &mut touched,
                        scratch,
                        |_, _| Some(MatchKind::Exact),
                    );
                }
                let prefix = |_: u32, _: &[u8]| Some(MatchKind::Prefix);
                if w.chars().count() <= SHORT_PREFIX {
                    if let Some(list) = self.short_prefixes.get(w.as_str()) {
                        self.take_first(
                            list.iter().copied(),
                            budget,
                            &mut touched,
                            scratch,
                            prefix,
                        );
                    }
                } else {
                    for (word, list) in prefix_range(&self.words, w) {
                        if word.as_ref() != w.as_str() {
                            self.take_first(
                                list.iter().copied(),
                                budget,
                                &mut touched,
                                scratch,
                                prefix,
                            );
                        }
                    }
                }
            }
            Term::Digits(d) => {
                let found = self.take_first_forms(
                    d.len(),
                    budget,
                    &mut touched,
                    scratch,
                    self.form_range(d),
                );
                // Infix matches rank after the prefix ones of the same
                // favourite mark: only so many can still make the cut.
                let budget = found.map(|n| budget.saturating_sub(n));
                let mut lists: Vec<&Vec<u32>> = query_grams(d).map(|g| &self.grams[g]).collect();
                lists.sort_by_key(|l| l.len());
                lists.dedup_by(|a, b| std::ptr::eq(*a, *b));
                // The shortest list is walked; the others (all ascending)
                // are searched forward from where the last search ended, so
                // each is read about once; the digits are checked last.
                if let Some((first, rest)) = lists.split_first() {
                    let mut cursors = vec![0usize; rest.len()];
                    self.take_first(
                        first.iter().copied(),
                        budget,
                        &mut touched,
                        scratch,
                        |slot, scratch| {
                            if scratch[slot as usize] != 0
                                || !rest
                                    .iter()
                                    .zip(cursors.iter_mut())
                                    .all(|(list, at)| seek(list, at, slot))
                            {
                                return None;
                            }
                            let entry = self.slots.get(slot as usize)?.as_ref()?;
                            (d.len() <= 4
                                || entry.number_forms.iter().any(|f| f.contains(d.as_str())))
                            .then_some(MatchKind::Infix)
                        },
                    );
                }
            }
        }
        let (side, matches): (_, fn(&str, &str) -> Option<MatchKind>) = match term {
            Term::Word(w) => ((&self.side_words, w), word_match),
            Term::Digits(d) => ((&self.side_forms, d), digits_match),
        };
        let (side, term_text) = side;
        for &(slot, start, end) in side {
            if let Some(text) = self.side_text.get(start as usize..end as usize)
                && let Some(kind) = matches(term_text, text)
                && self.slots.get(slot as usize).is_some_and(Option::is_some)
            {
                mark(&mut touched, scratch, slot, kind);
            }
        }
        self.collect_marked(touched, scratch)
    }

    /// The live slots among `touched` with their marks; the marks are
    /// cleared for the next query.
    fn collect_marked(&self, touched: Vec<u32>, scratch: &mut [u8]) -> Vec<(u32, MatchKind)> {
        let out = touched
            .iter()
            .filter(|&&slot| self.alive.get(slot as usize).copied().unwrap_or(false))
            .filter_map(|&slot| decode(scratch[slot as usize]).map(|k| (slot, k)))
            .collect();
        for slot in touched {
            scratch[slot as usize] = 0;
        }
        out
    }

    /// Marks the first `budget` slots of `slots` (ascending) in rank order
    /// that `check` accepts, among favourites and among the others.
    fn take_first(
        &self,
        slots: impl Iterator<Item = u32>,
        budget: [usize; 2],
        touched: &mut Vec<u32>,
        scratch: &mut [u8],
        mut check: impl FnMut(u32, &[u8]) -> Option<MatchKind>,
    ) {
        let mut favourites = true;
        let mut taken = 0;
        for slot in slots {
            if slot >= self.ordered {
                break;
            }
            if favourites && slot >= self.fav_end {
                favourites = false;
                taken = 0;
            }
            if taken == budget[usize::from(!favourites)] {
                if favourites {
                    continue;
                }
                break;
            }
            if !self.in_order(slot) {
                continue;
            }
            if let Some(kind) = check(slot, scratch) {
                mark(touched, scratch, slot, kind);
                taken += 1;
            }
        }
    }

    /// [`SearchIndex::take_first`] for a range of the sorted forms (not in
    /// slot order): the lowest `budget` slots in rank order per favourite
    /// mark and match kind, kept in bounded heaps. Returns how many slots
    /// it marked among favourites and among the others.
    fn take_first_forms(
        &self,
        len: usize,
        budget: usize,
        touched: &mut Vec<u32>,
        scratch: &mut [u8],
        range: &[(u64, u32)],
    ) -> [usize; 2] {
        let mut lowest: [BinaryHeap<u32>; 4] = Default::default();
        for &(packed, slot) in range {
            let form_len = (packed % 32) as usize;
            if form_len < len || slot >= self.ordered {
                continue;
            }
            let group = usize::from(slot >= self.fav_end) * 2 + usize::from(form_len > len);
            let heap = &mut lowest[group];
            if heap.len() == budget && heap.peek().is_some_and(|&top| slot >= top) {
                continue;
            }
            if !self.in_order(slot) || heap.iter().any(|&s| s == slot) {
                continue;
            }
            heap.push(slot);
            if heap.len() > budget {
                heap.pop();
            }
        }
        let mut marked = [0; 2];
        for (group, heap) in lowest.into_iter().enumerate() {
            let kind = if group % 2 == 0 {
                MatchKind::Exact
            } else {
                MatchKind::Prefix
            };
            for slot in heap {
                let before = touched.len();
                mark(touched, scratch, slot, kind);
                marked[group / 2] += touched.len() - before;
            }
        }
        marked
    }

    /// Every live slot matching `term`, each once with its best match.
    /// `scratch` is all zeros on entry and on return.
    fn term_matches(&self, term: &Term, scratch: &mut [u8]) -> Vec<(u32, MatchKind)> {
        let mut touched: Vec<u32> = Vec::new();
        match term {
            Term::Word(w) => {
                for (word, slots) in prefix_range(&self.words, w) {
                    let kind = if word.as_ref() == w.as_str() {
                        MatchKind::Exact
                    } else {
                        MatchKind::Prefix
                    };
                    for &slot in slots {
                        mark(&mut touched, scratch, slot, kind);
                    }
                }
            }
            Term::Digits(d) => {
                // Exact and prefix matches are a range of the sorted forms;
                // infix ones come from the intersection of the query's
                // digit-group lists (sorted by slot), checked when longer than
                // one group.
                for &(packed, slot) in self.form_range(d) {
                    let len = (packed % 32) as usize;
                    if len < d.len() {
                        continue;
                    }
                    let kind = if len == d.len() {
                        MatchKind::Exact
                    } else {
                        MatchKind::Prefix
                    };
                    mark(&mut touched, scratch, slot, kind);
                }
                let mut lists: Vec<&Vec<u32>> = query_grams(d).map(|g| &self.grams[g]).collect();
                lists.sort_by_key(|l| l.len());
                lists.dedup_by(|a, b| std::ptr::eq(*a, *b));
                if let Some((first, rest)) = lists.split_first() {
                    for &slot in first.iter() {
                        if scratch[slot as usize] != 0
                            || !rest.iter().all(|l| l.binary_search(&slot).is_ok())
                        {
                            continue;
                        }
                        let Some(Some(entry)) = self.slots.get(slot as usize) else {
                            continue;
                        };
                        if d.len() <= 4 || entry.number_forms.iter().any(|f| f.contains(d.as_str()))
                        {
                            mark(&mut touched, scratch, slot, MatchKind::Infix);
                        }
                    }
                }
            }
        }
        self.collect_marked(touched, scratch)
    }
}

impl SearchIndex {
    /// The forms whose first `digits.len()` digits are `digits` (plus
    /// shorter forms padded to the same value, which the caller skips).
    fn form_range(&self, digits: &str) -> &[(u64, u32)] {
        let Some(packed) = pack_form(digits) else {
            return &[];
        };
        let padded = packed / 32;
        let step = 10u64.pow((FORM_DIGITS - digits.len()) as u32);
        let lo = padded * 32;
        let hi = (padded + step) * 32;
        let start = self.forms.partition_point(|f| f.0 < lo);
        let end = self.forms.partition_point(|f| f.0 < hi);
        &self.forms[start..end]
    }
}

/// Longest digit form in the ordered index.
const FORM_DIGITS: usize = 17;

/// A digit string as one integer that sorts like the string: the digits
/// right-padded with zeros to [`FORM_DIGITS`] places, times 32, plus the
/// length. `None` for anything else.
fn pack_form(digits: &str) -> Option<u64> {
    if digits.is_empty()
        || digits.len() > FORM_DIGITS
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    let padded = value.checked_mul(10u64.pow((FORM_DIGITS - digits.len()) as u32))?;
    padded.checked_mul(32)?.checked_add(digits.len() as u64)
}

/// Favourite (bit 63 clear) and the first name bytes (bits 0..61): an
/// order consistent with [`rank`], coarser only in the last 3 bits of the
/// 8th byte.
fn base_key(entry: &IndexEntry) -> u64 {
    (u64::from(!entry.favourite) << 63) | (entry.sort_prefix() >> 3)
}

fn kind_bits(kind: MatchKind) -> u64 {
    u64::from(code(kind) - 1) << 61
}

/// Records `kind` for `slot`, keeping the best kind seen.
fn mark(touched: &mut Vec<u32>, scratch: &mut [u8], slot: u32, kind: MatchKind) {
    let cell = &mut scratch[slot as usize];
    if *cell == 0 {
        touched.push(slot);
        *cell = code(kind);
    } else {
        *cell = (*cell).min(code(kind));
    }
}

fn word_match(term: &str, word: &str) -> Option<MatchKind> {
    if word == term {
        Some(MatchKind::Exact)
    } else if word.starts_with(term) {
        Some(MatchKind::Prefix)
    } else {
        None
    }
}

fn digits_match(term: &str, form: &str) -> Option<MatchKind> {
    if form == term {
        Some(MatchKind::Exact)
    } else if form.starts_with(term) {
        Some(MatchKind::Prefix)
    } else if term.len() >= 3 && form.contains(term) {
        Some(MatchKind::Infix)
    } else {
        None
    }
}

fn best(kinds: impl Iterator<Item = Option<MatchKind>>) -> Option<MatchKind> {
    kinds.flatten().min()
}

fn code(kind: MatchKind) -> u8 {
    match kind {
        MatchKind::Exact => 1,
        MatchKind::Prefix => 2,
        MatchKind::Infix => 3,
    }
}

fn decode(code: u8) -> Option<MatchKind> {
    match code {
        1 => Some(MatchKind::Exact),
        2 => Some(MatchKind::Prefix),
        3 => Some(MatchKind::Infix),
        _ => None,
    }
}

fn push_posting(map: &mut BTreeMap<Box<str>, Vec<u32>>, key: &str, slot: u32) {
    match map.get_mut(key) {
        Some(list) => {
            if list.last() != Some(&slot) {
                list.push(slot);
            }
        }
        None => {
            map.insert(key.into(), vec![slot]);
        }
    }
}

/// Moves `at` forward in the ascending `list` to the first slot not below
/// `want` (galloping, then bisecting); whether that slot is `want`.
fn seek(list: &[u32], at: &mut usize, want: u32) -> bool {
    let (mut lo, mut step) = (*at, 1);
    while lo + step < list.len() && list[lo + step] < want {
        lo += step;
        step *= 2;
    }
    let hi = (lo + step + 1).min(list.len());
    *at = lo
        + list
            .get(lo..hi)
            .map_or(0, |part| part.partition_point(|&x| x < want));
    list.get(*at) == Some(&want)
}

fn push_short(map: &mut HashMap<Box<str>, Vec<u32>>, key: &str, slot: u32) {
    match map.get_mut(key) {
        Some(list) => {
            if list.last() != Some(&slot) {
                list.push(slot);
            }
        }
        None => {
            map.insert(key.into(), vec![slot]);
        }
    }
}

fn prefix_range<'a>(
    map: &'a BTreeMap<Box<str>, Vec<u32>>,
    prefix: &'a str,
) -> impl Iterator<Item = (&'a Box<str>, &'a Vec<u32>)> + 'a {
    map.range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
        .take_while(move |(k, _)| k.starts_with(prefix))
}

/// The `n`-digit group codes (3: 0..1000, 4: 1000..11 000) of a digit
/// string.
fn digit_grams(digits: &str, n: usize) -> impl Iterator<Item = usize> + '_ {
    let base = if n == 4 { 1000 } else { 0 };
    digits.as_bytes().windows(n).filter_map(move |w| {
        w.iter()
            .try_fold(0usize, |acc, &b| {
                b.is_ascii_digit().then(|| acc * 10 + usize::from(b - b'0'))
            })
            .map(|code| base + code)
    })
}

/// The groups a digit query is looked up by: its trigram when it has 3
/// digits, its 4-digit groups when longer (none when shorter).
fn query_grams(digits: &str) -> impl Iterator<Item = usize> + '_ {
    let n = if digits.len() == 3 { 3 } else { 4 };
    digit_grams(digits, n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NumberKind;

    fn entry(id: i64, source: Source, contact: Contact) -> IndexEntry {
        let contact = Contact { source, ..contact };
        IndexEntry::from_contact(ContactId(id), &contact)
    }

    fn sample() -> SearchIndex {
        let de = "DE".parse().ok();
        SearchIndex::from_entries([
            entry(
                1,
                Source::Local,
                Contact::new("Jörg Müller").with_number(NumberKind::Work, "030 1000042", de),
            ),
            entry(
                2,
                Source::Local,
                Contact::new("Åsa Bråten").with_organization("Bäckerei Öztürk"),
            ),
            entry(3, Source::Local, Contact::new("Mull Exact")),
            entry(
                4,
                Source::Local,
                Contact::new("Anna Mullins").with_number(NumberKind::Mobile, "+49 170 2000042", de),
            ),
            entry(
                5,
                Source::Ldap("corp".into()),
                Contact::new("Jörg Müller").with_number(NumberKind::Work, "+49 30 1000042", de),
            ),
        ])
    }

    fn ids(hits: &[IndexHit]) -> Vec<i64> {
        hits.iter().map(|h| h.id.0).collect()
    }

    #[test]
    fn accents_and_case_do_not_matter() {
        let index = sample();
        assert_eq!(ids(&index.search("braten", 10)), [2]);
        assert_eq!(ids(&index.search("ÖZTÜRK", 10)), [2]);
        assert_eq!(ids(&index.search("backer", 10)), [2]);
    }

    #[test]
    fn exact_ranks_before_prefix_and_favourites_first() {
        let mut index = sample();
        let hits = index.search("mull", 10);
        assert_eq!(ids(&hits), [3, 4, 1]);
        assert_eq!(hits[0].kind, MatchKind::Exact);
        assert_eq!(hits[1].kind, MatchKind::Prefix);
        index.set_favourite(ContactId(4), true);
        assert_eq!(ids(&index.search("mull", 10)), [4, 3, 1]);
    }

    #[test]
    fn every_word_must_match() {
        let index = sample();
        assert_eq!(ids(&index.search("anna mul", 10)), [4]);
        assert!(index.search("anna braten", 10).is_empty());
    }

    #[test]
    fn digits_match_anywhere_with_prefix_before_infix() {
        let index = sample();
        let hits = index.search("0301000042", 10);
        assert_eq!(hits[0].id, ContactId(1));
        assert_eq!(hits[0].kind, MatchKind::Exact);
        let hits = index.search("000042", 10);
        assert_eq!(ids(&hits), [4, 1]);
        assert!(hits.iter().all(|h| h.kind == MatchKind::Infix));
        assert_eq!(ids(&index.search("0170", 10)), [4]);
        assert_eq!(index.search("+49 170", 10)[0].kind, MatchKind::Prefix);
    }

    #[test]
    fn duplicates_across_sources_merge_by_number() {
        let index = sample();
        let hits = index.search("1000042", 10);
        assert_eq!(hits.len(), 1, "{hits:?}");
        assert_eq!(hits[0].id, ContactId(1));
        assert_eq!(hits[0].merged, [ContactId(5)]);
    }

    #[test]
    fn removed_contacts_are_not_found_and_reinsert_replaces() {
        let mut index = sample();
        assert!(index.remove(ContactId(2)));
        assert!(!index.remove(ContactId(2)));
        assert!(index.search("braten", 10).is_empty());
        index.insert(entry(1, Source::Local, Contact::new("Renamed Person")));
        assert_eq!(ids(&index.search("jorg", 10)), [5]);
        assert_eq!(ids(&index.search("renamed", 10)), [1]);
        assert_eq!(index.len(), 4);
    }

    #[test]
    fn the_index_agrees_with_classify_on_every_query() {
        let index = sample();
        let entries: Vec<IndexEntry> = (1..=5)
            .filter_map(|i| index.get(ContactId(i)).cloned())
            .collect();
        for query in [
            "m",
            "mu",
            "mull",
            "j",
            "0",
            "03",
            "030",
            "42",
            "00004",
            "ba",
            "x",
            "anna 0170",
        ] {
            let terms = fold::query_terms(query);
            let mut ranked: Vec<(&IndexEntry, MatchKind)> = entries
                .iter()
                .filter_map(|e| classify_all(&terms, e).map(|k| (e, k)))
                .collect();
            ranked.sort_by(|a, b| rank(*a, *b));
            assert_eq!(
                index.search(query, 10),
                merge_duplicates(&ranked, 10),
                "{query}"
            );
        }
    }

    #[test]
    fn a_favourite_infix_match_still_leads_many_prefix_matches() {
        let de = "DE".parse().ok();
        let mut entries: Vec<IndexEntry> = (0..200)
            .map(|i| {
                let c = Contact::new(&format!("Person {i:03}")).with_number(
                    NumberKind::Work,
                    &format!("+49 30 {}", 1_000_000 + i),
                    de,
                );
                entry(i, Source::Local, c)
            })
            .collect();
        let mut fav = entry(
            500,
            Source::Local,
            Contact::new("Zz Favourite").with_number(NumberKind::Work, "+49 89 4930111", de),
        );
        fav.favourite = true;
        entries.push(fav);
        let index = SearchIndex::from_entries(entries.clone());
        let hits = index.search("4930", 5);
        assert_eq!(hits[0].id, ContactId(500));
        assert_eq!(hits[0].kind, MatchKind::Infix);
        assert_eq!(hits[1].kind, MatchKind::Prefix);
        let terms = fold::query_terms("4930");
        let mut ranked: Vec<(&IndexEntry, MatchKind)> = entries
            .iter()
            .filter_map(|e| classify_all(&terms, e).map(|k| (e, k)))
            .collect();
        ranked.sort_by(|a, b| rank(*a, *b));
        ranked.truncate(candidate_budget(5));
        assert_eq!(hits, merge_duplicates(&ranked, 5));
    }

    /// The brute-force answer: every live entry classified, ranked, cut to
    /// the candidate budget and merged.
    fn brute_force(index: &SearchIndex, ids: &[i64], query: &str, limit: usize) -> Vec<IndexHit> {
        let entries: Vec<&IndexEntry> = ids
            .iter()
            .filter_map(|&i| index.get(ContactId(i)))
            .collect();
        let terms = fold::query_terms(query);
        let mut ranked: Vec<(&IndexEntry, MatchKind)> = entries
            .iter()
            .filter_map(|e| classify_all(&terms, e).map(|k| (*e, k)))
            .collect();
        ranked.sort_by(|a, b| rank(*a, *b));
        ranked.truncate(candidate_budget(limit));
        merge_duplicates(&ranked, limit)
    }

    #[test]
    fn reading_lists_in_rank_order_agrees_with_brute_force_after_changes() {
        const SYL: [&str; 12] = [
            "ma", "mül", "ler", "an", "na", "ber", "o", "li", "sø", "ren", "m", "el",
        ];
        let de = "DE".parse().ok();
        let mut seed: u64 = 7;
        let mut next = move |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        let make = |i: i64, next: &mut dyn FnMut(u64) -> u64| {
            let name: String = (0..1 + next(3)).map(|_| SYL[next(12) as usize]).collect();
            let given = SYL[next(12) as usize];
            let source = if next(4) == 0 {
                Source::Ldap("corp".into())
            } else {
                Source::Local
            };
            let contact = Contact::new(&format!("{given} {name}"))
                .with_number(
                    NumberKind::Work,
                    &format!("+49 30 {}", 1_000_000 + next(3000)),
                    de,
                )
                .with_number(
                    NumberKind::Mobile,
                    &format!("0170 {}", 2_000_000 + next(300_000)),
                    de,
                );
            let mut e = entry(i, source, contact);
            e.favourite = next(20) == 0;
            e
        };
        let mut ids: Vec<i64> = (1..=3000).collect();
        let mut index = SearchIndex::from_entries(ids.iter().map(|&i| make(i, &mut next)));
        let queries = [
            "m", "ma", "mül", "mulle", "o", "an", "na m", "el", "s", "so", "ren", "x", "30", "49",
            "4930", "0170", "1000", "01702", "000", "123", "0042", "491702", "ma 0170", "1",
        ];
        let check = |index: &SearchIndex, ids: &[i64], stage: &str| {
            for q in queries {
                for limit in [1, 5, 20] {
                    assert_eq!(
                        index.search(q, limit),
                        brute_force(index, ids, q, limit),
                        "{stage}: {q:?} limit {limit}"
                    );
                }
            }
        };
        check(&index, &ids, "built");
        // Marks and new contacts stay below the relayout threshold...
        for i in (1..=3000).step_by(97) {
            index.set_favourite(ContactId(i), next(2) == 0);
        }
        for i in 3001..=3030 {
            index.insert(make(i, &mut next));
            ids.push(i);
        }
        for i in (5..3000).step_by(301) {
            index.remove(ContactId(i));
        }
        ids.retain(|i| (i - 5) % 301 != 0 || *i >= 3000);
        assert!(!index.unordered.is_empty());
        check(&index, &ids, "changed");
        // ... and past it, which lays the index out again.
        for i in (2..=3000).step_by(13) {
            index.set_favourite(ContactId(i), true);
        }
        assert!(index.unordered.len() <= 64);
        check(&index, &ids, "laid out again");
    }

    #[test]
    fn by_number_prefers_favourites_then_local_then_oldest() {
        let mut index = sample();
        assert_eq!(index.by_number("+49301000042"), Some(ContactId(1)));
        index.set_favourite(ContactId(5), true);
        assert_eq!(index.by_number("+49301000042"), Some(ContactId(5)));
        index.remove(ContactId(5));
        assert_eq!(index.by_number("+49301000042"), Some(ContactId(1)));
        assert_eq!(index.by_number("+491702000042"), Some(ContactId(4)));
        assert_eq!(index.by_number("+49301000043"), None);
        assert_eq!(index.by_number("0301000042"), None);
    }

    #[test]
    fn limit_caps_results() {
        let index = sample();
        assert_eq!(index.search("m", 2).len(), 2);
        assert!(index.search("m", 0).is_empty());
        assert!(index.search("   ", 5).is_empty());
    }
}
