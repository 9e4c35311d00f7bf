"""The deterministic sample catalog: sellers and products for development, tests and benchmarks.

Rows come out as tuples in the column order of ``SELLER_COLUMNS`` / ``PRODUCT_COLUMNS``, ready
for asyncpg's ``copy_records_to_table``. The same ``(products, seed)`` always yields the same
rows, byte for byte, on any machine and at any time.

This module must never do I/O, read the clock, or touch the global ``random`` state; and it
must never materialise the product list (150k products stream through a generator, only the
few hundred sellers are held in memory).
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import accumulate

SELLER_COLUMNS: tuple[str, ...] = ("id", "name", "country", "created_at", "updated_at")
PRODUCT_COLUMNS: tuple[str, ...] = (
    "id",
    "seller_id",
    "name",
    "description",
    "category",
    "fandom",
    "price",
    "currency",
    "stock",
    "status",
    "image_url",
    "rating",
    "created_at",
    "updated_at",
)

SellerRow = tuple[int, str, str, datetime, datetime]
ProductRow = tuple[int, int, str, str, str, str, Decimal, str, int, str, str | None, Decimal | None, datetime, datetime]

# A fixed epoch instead of "now": timestamps must not depend on when the catalog is generated.
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
# Products are created over two years after the epoch; sellers joined in the three years before.
_PRODUCT_SPAN_SECONDS = 730 * 86_400
_SELLER_SPAN_SECONDS = 3 * 365 * 86_400

MIN_SELLERS = 20
MAX_SELLERS = 400
PRODUCTS_PER_SELLER = 500

IMAGE_BASE_URL = "https://images.hos-marketplace.example/products"

# The sample catalog's seed when none is given: the committed baselines were measured on it.
DEFAULT_SEED = 42


@dataclass(frozen=True, slots=True)
class Fandom:
    name: str
    characters: tuple[str, ...]
    places: tuple[str, ...]
    items: tuple[str, ...]


def _f(name: str, characters: str, places: str, items: str) -> Fandom:
    # Vocabulary is written as "a; b; c" strings to keep the table below readable.
    def split(text: str) -> tuple[str, ...]:
        return tuple(part.strip() for part in text.split(";"))

    return Fandom(name, split(characters), split(places), split(items))


# In popularity order: the fandom at rank r gets weight 1 / r**FANDOM_ZIPF_EXPONENT, so the
# first few dominate the way Harry Potter and Star Wars dominate a real fandom marketplace.
FANDOM_VOCAB: tuple[Fandom, ...] = (
    _f(
        "Harry Potter",
        "Harry Potter; Hermione Granger; Ron Weasley; Albus Dumbledore; Severus Snape; "
        "Luna Lovegood; Draco Malfoy; Hagrid; Sirius Black; Dobby",
        "Hogwarts; Diagon Alley; Hogsmeade; Gryffindor; Slytherin; Ravenclaw; Hufflepuff; Platform 9 3/4",
        "Elder Wand; Time-Turner; Golden Snitch; Marauder's Map; Sorting Hat; Deathly Hallows; "
        "Horcrux Locket; Nimbus 2000",
    ),
    _f(
        "Star Wars",
        "Darth Vader; Luke Skywalker; Princess Leia; Han Solo; Yoda; Chewbacca; Obi-Wan Kenobi; "
        "The Mandalorian; Grogu; Boba Fett; Ahsoka Tano",
        "Tatooine; Death Star; Hoth; Endor; Coruscant; Mos Eisley Cantina",
        "Lightsaber; Darth Vader Helmet; Stormtrooper Helmet; Millennium Falcon; Beskar Helmet; "
        "Holocron; Blaster Pistol",
    ),
    _f(
        "Marvel",
        "Iron Man; Spider-Man; Captain America; Thor; Black Widow; Loki; Wanda Maximoff; "
        "Black Panther; Deadpool; Doctor Strange",
        "Avengers Tower; Wakanda; Asgard; Sanctum Sanctorum; Stark Industries",
        "Infinity Gauntlet; Mjolnir; Captain America Shield; Iron Man Helmet; Web Shooter; Tesseract",
    ),
    _f(
        "Pokémon",
        "Pikachu; Charizard; Eevee; Bulbasaur; Squirtle; Charmander; Snorlax; Mewtwo; Gengar; Jigglypuff; Lucario",
        "Pallet Town; Kanto; Johto; Viridian Forest; Pokémon Center",
        "Poké Ball; Master Ball; Pokédex; Gym Badge Set; Great Ball",
    ),
    _f(
        "Lord of the Rings",
        "Frodo Baggins; Gandalf; Aragorn; Legolas; Gimli; Samwise Gamgee; Gollum; Galadriel; Arwen; Sauron",
        "The Shire; Rivendell; Mordor; Minas Tirith; Rohan; Bag End; Lothlorien",
        "One Ring; Sting; Anduril; Evenstar Pendant; Elven Brooch; Mithril Shirt; Palantir",
    ),
    _f(
        "Naruto",
        "Naruto Uzumaki; Sasuke Uchiha; Sakura Haruno; Kakashi Hatake; Itachi Uchiha; Hinata Hyuga; Gaara; Jiraiya",
        "Hidden Leaf Village; Akatsuki Hideout; Ichiraku Ramen; Valley of the End",
        "Leaf Headband; Kunai; Sharingan Lens; Akatsuki Ring; Rasengan Orb",
    ),
    _f(
        "DC",
        "Batman; Superman; Wonder Woman; The Joker; Harley Quinn; The Flash; Aquaman; Catwoman; Nightwing",
        "Gotham City; Metropolis; Arkham Asylum; Themyscira; The Batcave",
        "Batarang; Lasso of Truth; Batman Cowl; Kryptonite Crystal; Green Lantern Ring",
    ),
    _f(
        "One Piece",
        "Monkey D. Luffy; Roronoa Zoro; Nami; Sanji; Nico Robin; Tony Tony Chopper; Portgas D. Ace; Trafalgar Law",
        "Thousand Sunny; Going Merry; Wano; Alabasta; East Blue",
        "Straw Hat; Gomu Gomu Devil Fruit; Wado Ichimonji Katana; Jolly Roger Flag; Den Den Mushi",
    ),
    _f(
        "Studio Ghibli",
        "Totoro; Kiki; Chihiro; No-Face; Howl; Calcifer; Princess Mononoke; Jiji; Ponyo; Catbus",
        "Spirited Away Bathhouse; Howl's Moving Castle; Laputa; Forest Spirit Grove",
        "Kiki's Broom; Soot Sprite Jar; Radish Spirit; Laputa Crystal Pendant; Totoro Umbrella",
    ),
    _f(
        "Dragon Ball",
        "Goku; Vegeta; Gohan; Piccolo; Frieza; Trunks; Bulma; Master Roshi; Majin Buu; Broly",
        "Capsule Corp; Kame House; Planet Namek; Hyperbolic Time Chamber",
        "Dragon Balls; Scouter; Power Pole; Flying Nimbus; Senzu Bean Pouch",
    ),
    _f(
        "Demon Slayer",
        "Tanjiro Kamado; Nezuko Kamado; Zenitsu Agatsuma; Inosuke Hashibira; Giyu Tomioka; "
        "Kyojuro Rengoku; Shinobu Kocho; Muzan Kibutsuji",
        "Mugen Train; Butterfly Mansion; Swordsmith Village; Entertainment District",
        "Nichirin Sword; Hanafuda Earrings; Nezuko Bamboo Muzzle; Demon Slayer Corps Haori",
    ),
    _f(
        "Star Trek",
        "Captain Kirk; Spock; Jean-Luc Picard; Data; Worf; Seven of Nine; Uhura; Dr. McCoy",
        "USS Enterprise; Deep Space Nine; Starfleet Academy; Vulcan; Qo'noS",
        "Phaser; Tricorder; Communicator Badge; Bat'leth; Starfleet Delta Badge",
    ),
    _f(
        "Attack on Titan",
        "Eren Yeager; Mikasa Ackerman; Levi Ackerman; Armin Arlert; Erwin Smith; Hange Zoe; Reiner Braun",
        "Wall Maria; Shiganshina; Paradis Island; Marley",
        "Survey Corps Cloak; ODM Gear; Thunder Spear; Wings of Freedom Patch; Basement Key",
    ),
    _f(
        "Doctor Who",
        "The Doctor; Rose Tyler; Clara Oswald; River Song; The Master; Amy Pond; Donna Noble; Captain Jack Harkness",
        "Gallifrey; The TARDIS; Skaro; Bad Wolf Bay",
        "Sonic Screwdriver; TARDIS Key; Dalek; Fez; Psychic Paper Wallet; Fourth Doctor Scarf",
    ),
    _f(
        "My Hero Academia",
        "Izuku Midoriya; All Might; Katsuki Bakugo; Shoto Todoroki; Ochaco Uraraka; Tenya Iida; Eijiro Kirishima; Dabi",
        "U.A. High School; Class 1-A; Heights Alliance",
        "Hero Costume Gauntlets; All Might Figure Base; Bakugo Grenade Gauntlet; Hero License",
    ),
    _f(
        "The Legend of Zelda",
        "Link; Princess Zelda; Ganondorf; Midna; Navi; Sheik; Korok; Epona",
        "Hyrule; Hyrule Castle; Kakariko Village; Death Mountain; Lost Woods",
        "Master Sword; Hylian Shield; Triforce; Ocarina of Time; Sheikah Slate; Majora's Mask",
    ),
    _f(
        "Game of Thrones",
        "Daenerys Targaryen; Jon Snow; Tyrion Lannister; Arya Stark; Cersei Lannister; Sansa Stark; "
        "The Night King; Brienne of Tarth",
        "Winterfell; King's Landing; The Wall; Dragonstone; Braavos",
        "Iron Throne; Longclaw; Needle; Dragon Egg; Hand of the King Pin; Valyrian Steel Dagger",
    ),
    _f(
        "The Witcher",
        "Geralt of Rivia; Yennefer; Ciri; Jaskier; Triss Merigold; Roach",
        "Kaer Morhen; Novigrad; Toussaint; Skellige; Velen",
        "Witcher Medallion; Silver Sword; Yennefer's Obsidian Star; Gwent Deck; Swallow Potion",
    ),
    _f(
        "Final Fantasy",
        "Cloud Strife; Sephiroth; Tifa Lockhart; Aerith Gainsborough; Squall Leonhart; Noctis; Chocobo; Moogle",
        "Midgar; Gold Saucer; Balamb Garden; Zanarkand",
        "Buster Sword; Masamune; Materia Orb; Gunblade; Crystal Pendant",
    ),
    _f(
        "Sailor Moon",
        "Sailor Moon; Sailor Mercury; Sailor Mars; Sailor Jupiter; Sailor Venus; Tuxedo Mask; Luna; Chibiusa",
        "Moon Kingdom; Crystal Tokyo; Juban District",
        "Moon Stick; Cosmic Heart Compact; Crescent Moon Wand; Silver Crystal; Spiral Heart Rod",
    ),
    _f(
        "Jujutsu Kaisen",
        "Yuji Itadori; Satoru Gojo; Megumi Fushiguro; Nobara Kugisaki; Ryomen Sukuna; Kento Nanami; Maki Zenin",
        "Tokyo Jujutsu High; Shibuya; Kyoto Jujutsu High",
        "Sukuna Finger; Gojo Blindfold; Inverted Spear of Heaven; Cursed Doll; Playful Cloud",
    ),
    _f(
        "Stranger Things",
        "Eleven; Mike Wheeler; Dustin Henderson; Steve Harrington; Max Mayfield; Will Byers; Eddie Munson; Demogorgon",
        "Hawkins; The Upside Down; Starcourt Mall; Hawkins Lab; Hellfire Club",
        "Demogorgon Mask; Hellfire Club Shirt; Christmas Lights Alphabet Wall; Walkie-Talkie; Eggo Box",
    ),
    _f(
        "Dune",
        "Paul Atreides; Lady Jessica; Chani; Stilgar; Duncan Idaho; Baron Harkonnen; Shai-Hulud",
        "Arrakis; Caladan; Giedi Prime; Sietch Tabr",
        "Crysknife; Stillsuit; Ornithopter; Spice Melange Tin; Gom Jabbar",
    ),
    _f(
        "Hunger Games",
        "Katniss Everdeen; Peeta Mellark; Gale Hawthorne; Haymitch Abernathy; Effie Trinket; President Snow",
        "District 12; The Capitol; The Arena; Panem",
        "Mockingjay Pin; Katniss Bow; Tribute Token; Reaping Bowl",
    ),
    _f(
        "Mass Effect",
        "Commander Shepard; Garrus Vakarian; Liara T'Soni; Tali'Zorah; Wrex; Mordin Solus",
        "The Normandy; The Citadel; Omega; Tuchanka",
        "N7 Helmet; Omni-Tool; M-8 Avenger Rifle; Reaper Model; N7 Dog Tags",
    ),
    _f(
        "Halo",
        "Master Chief; Cortana; The Arbiter; Sergeant Johnson; Noble Six",
        "Reach; The Ark; Installation 04; Pillar of Autumn",
        "Spartan Helmet; Energy Sword; Needler; Plasma Grenade; MA5B Assault Rifle",
    ),
    _f(
        "Sherlock",
        "Sherlock Holmes; Dr. John Watson; Mrs Hudson; Moriarty; Irene Adler; Mycroft Holmes",
        "221B Baker Street; Scotland Yard; Reichenbach Falls",
        "Deerstalker Hat; Calabash Pipe; Violin; Smiley Face Wall; Magnifying Glass",
    ),
    _f(
        "Supernatural",
        "Dean Winchester; Sam Winchester; Castiel; Crowley; Bobby Singer",
        "Bobby's Salvage Yard; The Bunker; Lawrence Kansas",
        "Impala Keyring; Colt Revolver; Demon Knife; Anti-Possession Symbol; Angel Blade",
    ),
    _f(
        "Chainsaw Man",
        "Denji; Power; Makima; Aki Hayakawa; Pochita; Kobeni",
        "Public Safety HQ; Tokyo",
        "Pochita Chainsaw; Devil Hunter Badge; Fox Devil Mask",
    ),
    _f(
        "Spy x Family",
        "Loid Forger; Yor Forger; Anya Forger; Bond Forger; Damian Desmond",
        "Eden Academy; Berlint; Forger Apartment",
        "Stella Star; Thorn Princess Stiletto; Chimera Plush; Eden Academy Uniform",
    ),
    _f(
        "Evangelion",
        "Shinji Ikari; Rei Ayanami; Asuka Langley; Misato Katsuragi; Kaworu Nagisa; Gendo Ikari",
        "Tokyo-3; NERV HQ; Terminal Dogma",
        "Eva Unit-01; Lance of Longinus; Plugsuit; SDAT Player; NERV Badge",
    ),
    _f(
        "Discworld",
        "Rincewind; Death; Granny Weatherwax; Sam Vimes; The Librarian; Tiffany Aching; The Luggage",
        "Ankh-Morpork; Unseen University; Lancre; The Great A'Tuin",
        "Wizard's Hat; City Watch Badge; Octavo; Hogfather Bauble",
    ),
    _f(
        "Critical Role",
        "Vex'ahlia; Vax'ildan; Scanlan Shorthalt; Grog Strongjaw; Percy de Rolo; Keyleth; Trinket",
        "Emon; Whitestone; Exandria",
        "Percy's Pepperbox; Vox Machina Crest; Mighty Nein Dice Set; Bag of Holding",
    ),
    _f(
        "Hollow Knight",
        "The Knight; Hornet; Quirrel; Zote; Grimm; The Radiance",
        "Hallownest; City of Tears; Greenpath; Dirtmouth",
        "Old Nail; Soul Vessel; Hunter's Journal; Grimm Troupe Lantern",
    ),
    _f(
        "Avatar: The Last Airbender",
        "Aang; Katara; Zuko; Toph Beifong; Sokka; Iroh; Appa; Momo",
        "Ba Sing Se; Fire Nation; Southern Water Tribe; Air Temple",
        "White Lotus Tile; Water Tribe Necklace; Blue Spirit Mask; Boomerang",
    ),
    _f(
        "Sonic the Hedgehog",
        "Sonic; Tails; Knuckles; Shadow; Amy Rose; Dr. Eggman",
        "Green Hill Zone; Station Square; Angel Island",
        "Chaos Emerald; Master Emerald; Gold Ring; Speed Shoes",
    ),
)

FANDOMS: tuple[str, ...] = tuple(fandom.name for fandom in FANDOM_VOCAB)
FANDOM_ZIPF_EXPONENT = 1.0


@dataclass(frozen=True, slots=True)
class Category:
    name: str
    # The singular a sentence uses: "Celebrate Pikachu with this figure."
    noun: str
    weight: float
    # Prices are log-normal: median in the seller's currency, sigma of the underlying normal.
    median_price: float
    price_sigma: float
    # Name templates; slots: {c} character, {p} place, {i} item, {f} fandom, {s} size.
    templates: tuple[str, ...]
    sizes: tuple[str, ...]
    materials: tuple[str, ...]


CATEGORIES_SPEC: tuple[Category, ...] = (
    Category(
        "apparel",
        "piece of apparel",
        14,
        24.0,
        0.35,
        (
            "{c} T-Shirt",
            "{f} {p} Hoodie",
            "{c} Graphic Tee",
            "{p} Varsity Jacket",
            "{f} Logo Sweatshirt",
            "{c} Socks 3-Pack",
            "{p} Baseball Cap",
            "{i} Embroidered Beanie",
        ),
        ("",),
        ("100% organic cotton", "a soft cotton-poly blend", "heavyweight fleece"),
    ),
    Category(
        "figures",
        "figure",
        12,
        42.0,
        0.8,
        (
            "{c} Figure {s}",
            "{c} Action Figure",
            "{c} Statue {s}",
            "{f} {c} Mini Figure",
            "{c} Bobblehead",
            "{c} Resin Diorama with {i}",
        ),
        ("1/6 Scale", "1/4 Scale", "1/8 Scale", "15cm", "25cm", "30cm"),
        ("hand-painted PVC", "cold-cast resin", "die-cast metal and ABS"),
    ),
    Category(
        "collectibles",
        "collectible",
        11,
        14.0,
        0.8,
        (
            "{c} Enamel Pin",
            "{f} Trading Card Booster Box",
            "{i} Keyring",
            "{c} Acrylic Stand",
            "{p} Commemorative Coin",
            "{f} Blind Box Series {s}",
            "{i} Display Case",
        ),
        ("1", "2", "3", "4"),
        ("hard enamel", "zinc alloy", "clear acrylic"),
    ),
    Category(
        "posters",
        "print",
        9,
        12.0,
        0.5,
        (
            "{p} Art Print {s}",
            "{c} Poster {s}",
            "{f} Map of {p} {s}",
            "{c} Minimalist Print {s}",
            "{f} Framed Print {s}",
        ),
        ("A4", "A3", "A2", "50x70cm", "61x91cm"),
        ("200gsm matte paper", "archival giclée paper", "satin photo paper"),
    ),
    Category(
        "homeware",
        "homeware piece",
        9,
        14.0,
        0.45,
        (
            "{p} Mug",
            "{f} Cushion",
            "{c} Night Light",
            "{i} Bookends",
            "{p} Scented Candle",
            "{f} Tea Towel",
            "{c} Pint Glass",
            "{p} Coaster Set",
        ),
        ("",),
        ("glazed ceramic", "soy wax", "velvet", "tempered glass"),
    ),
    Category(
        "jewellery",
        "piece of jewellery",
        8,
        26.0,
        0.6,
        (
            "{c} {i} Necklace",
            "{i} Pendant",
            "{f} {i} Charm Bracelet",
            "{p} Crest Ring",
            "{i} Earrings",
            "{c} Cufflinks",
        ),
        ("",),
        ("sterling silver", "gold-plated brass", "stainless steel"),
    ),
    Category(
        "plush",
        "plush",
        7,
        18.0,
        0.45,
        ("{c} Plush {s}", "{c} Soft Toy {s}", "{f} {c} Plushie", "{c} Cuddly Cushion {s}"),
        ("20cm", "30cm", "45cm", "60cm"),
        ("super-soft polyester", "minky fabric"),
    ),
    Category(
        "stationery",
        "stationery set",
        7,
        8.0,
        0.5,
        ("{p} Notebook", "{c} Bookmark Set", "{f} Sticker Pack", "{i} Pen", "{p} Journal {s}", "{f} Wall Calendar"),
        ("A5", "A6", "B5"),
        ("recycled paper", "faux leather", "vinyl"),
    ),
    Category(
        "props",
        "prop",
        5,
        48.0,
        0.7,
        ("{f} {i} Replica", "{i} Prop", "{c}'s {i}", "{i} Light-Up Prop", "{f} {i} Prop {s}"),
        ("1:1", "1:2", "Desk-Size"),
        ("polyresin", "ABS and die-cast metal", "hand-finished foam"),
    ),
    Category(
        "cosplay",
        "cosplay piece",
        5,
        60.0,
        0.6,
        ("{c} Cosplay Costume", "{c} Wig", "{c} Cosplay Boots", "{i} Cosplay Accessory", "{c} Full Costume Set {s}"),
        ("XS-S", "M-L", "XL-XXL"),
        ("breathable polyester", "heat-resistant fibre", "EVA foam"),
    ),
    Category(
        "books",
        "book",
        5,
        18.0,
        0.45,
        (
            "The Art of {f}",
            "{f} Official Cookbook",
            "{f}: The Visual Dictionary",
            "{p} Colouring Book",
            "{c} Illustrated Guide",
        ),
        ("",),
        ("hardback", "paperback", "cloth-bound hardback"),
    ),
    Category(
        "games",
        "game",
        4,
        30.0,
        0.5,
        (
            "{f} Board Game",
            "{f} Trivia Quiz",
            "{p} Jigsaw Puzzle {s}",
            "{f} Card Game",
            "{f} Monopoly-Style Game",
            "{c} Dice Set",
        ),
        ("500 Pieces", "1000 Pieces", "1500 Pieces"),
        ("sturdy board and cards", "premium cardstock"),
    ),
    Category(
        "replicas",
        "replica",
        4,
        95.0,
        0.8,
        ("{i} Replica {s}", "{f} {i} Museum Replica", "{c} {i} Replica", "{i} Screen-Accurate Replica"),
        ("1:1", "1:1 Scale", "Limited Run"),
        ("cast metal", "fibreglass and resin", "hand-forged steel"),
    ),
)

CATEGORIES: tuple[str, ...] = tuple(category.name for category in CATEGORIES_SPEC)

# Adjectives before the name and editions after it: what makes "deluxe" and "limited" queries
# (and prefix suggestions) meaningful.
_ADJECTIVES = (
    "Official",
    "Handmade",
    "Vintage",
    "Deluxe",
    "Premium",
    "Hand-Painted",
    "Retro",
    "Glow-in-the-Dark",
    "Chibi",
    "Classic",
    "Collector's",
    "Minimalist",
)
_EDITIONS = (
    "Limited Edition",
    "Collector's Edition",
    "Deluxe Edition",
    "Anniversary Edition",
    "Signature Edition",
    "Exclusive",
    "Special Edition",
    "Numbered Edition",
)
_OPENERS = (
    "Officially licensed {f} merchandise.",
    "A must-have for every {f} fan.",
    "Inspired by {c} and the world of {p}.",
    "Bring a piece of {p} home.",
    "Designed by fans, for fans of {f}.",
    "Celebrate {c} with this {cat}.",
)
_MIDDLES = (
    "Made from {m}.",
    "Crafted from {m} with attention to every detail.",
    "Finished in {m} and packed in a gift box.",
    "Features artwork of {c} and the {i}.",
)
_CLOSERS = (
    "Ships within {d} working days.",
    "Perfect as a gift.",
    "Stock is limited.",
    "Each piece is checked by hand before it ships.",
    "",
)

# Sellers: country sets the currency they price in (mostly GBP: a UK marketplace).
_COUNTRIES: tuple[tuple[str, str, float], ...] = (
    ("GB", "GBP", 80),
    ("US", "USD", 6),
    ("CA", "USD", 2),
    ("IE", "EUR", 3),
    ("DE", "EUR", 4),
    ("FR", "EUR", 3),
    ("NL", "EUR", 2),
)
_SELLER_FIRST = (
    "Mischief",
    "Galactic",
    "Hidden Leaf",
    "Golden",
    "Arcane",
    "Pixel",
    "Dragon",
    "Midnight",
    "Crimson",
    "Starlight",
    "Moonlit",
    "Rogue",
    "Emerald",
    "Silver",
    "Wandering",
    "Forge",
    "Clockwork",
    "Nebula",
    "Lucky",
    "Phoenix",
    "Kaiju",
    "Spellbound",
    "Northern",
    "Velvet",
    "Retro",
    "Cosmic",
    "Tiny",
    "Iron",
    "Misty",
    "Paper",
)
_SELLER_SECOND = (
    "Merch",
    "Props",
    "Collectibles",
    "Emporium",
    "Treasures",
    "Prints",
    "Workshop",
    "Curios",
    "Vault",
    "Trading Post",
    "Cosplay",
    "Creations",
    "Crafts",
    "Figures",
    "Bazaar",
    "Attic",
)
_SELLER_SUFFIX = ("", "", "", " Co.", " Ltd", " UK", " Studio", " & Co.", " Store")

# Two-decimal endings shoppers actually see: mostly .99, some .50/.00, the rest anything.
_RATING_VALUES: tuple[Decimal, ...] = tuple(Decimal(f"{tenths / 10:.1f}") for tenths in range(51))

STATUS_ACTIVE_SHARE = 0.85
STATUS_DRAFT_SHARE = 0.10  # the rest, 5%, is archived
OUT_OF_STOCK_SHARE = 0.12
UNRATED_SHARE = 0.15
NO_IMAGE_SHARE = 0.03
EXPENSIVE_REPLICA_SHARE = 0.02


@dataclass(frozen=True, slots=True)
class Catalog:
    """A sample catalog: the sellers (small, held in memory) and a re-iterable product stream."""

    products: int
    seed: int
    sellers: tuple[SellerRow, ...]

    def iter_products(self) -> Iterator[ProductRow]:
        """A fresh stream of the catalog's products; every call yields the same rows."""
        return _product_rows(self.products, self.seed, self.sellers)

    def iter_truth(self) -> Iterator[ProductTruth]:
        """What the generator meant by each product, in the order of :meth:`iter_products`."""
        return (truth for _, truth in _product_stream(self.products, self.seed, self.sellers, with_truth=True) if truth)


@dataclass(frozen=True, slots=True)
class ProductTruth:
    """Ground truth about one generated product: what it is, independent of any search.

    The generator picks a fandom, a category and a character, place and item of that fandom
    for every product; the name template and description sentences use some of them. A
    character, place or item is *featured* where the product's name or description mentions
    it, and ``None`` where neither does. Relevance judgments (``relevance/``) are computed
    from these fields, never from what a search returns.
    """

    id: int
    active: bool
    fandom: str
    category: str
    character: str | None
    place: str | None
    item: str | None
    # Which of them the *name* mentions (a subset of the featured ones): "c", "p", "i", "f".
    in_name: frozenset[str]
    # The name template, e.g. "{c} Plush {s}": its fixed words say what kind of product it is.
    template: str
    rating: Decimal | None


def seller_count(products: int) -> int:
    """How many sellers a catalog of ``products`` products has (≈ one per 500, 20–400)."""
    return min(MAX_SELLERS, max(MIN_SELLERS, products // PRODUCTS_PER_SELLER))


def generate_catalog(products: int, *, seed: int = DEFAULT_SEED) -> Catalog:
    """The catalog for ``products`` products and ``seed``; products are generated lazily."""
    if products < 0:
        raise ValueError(f"products must be >= 0, got {products}")
    return Catalog(products=products, seed=seed, sellers=tuple(iter_sellers(products, seed=seed)))


def iter_sellers(products: int, *, seed: int = DEFAULT_SEED) -> Iterator[SellerRow]:
    """Seller rows (``SELLER_COLUMNS`` order) with ids 1..seller_count(products)."""
    # Separate string-seeded streams: sellers and products never shift each other's randomness.
    rng = random.Random(f"hos-search/sellers/{seed}")
    countries = [country for country, _, _ in _COUNTRIES]
    country_weights = list(accumulate(weight for _, _, weight in _COUNTRIES))
    used: set[str] = set()
    for seller_id in range(1, seller_count(products) + 1):
        while True:
            name = f"{rng.choice(_SELLER_FIRST)} {rng.choice(_SELLER_SECOND)}{rng.choice(_SELLER_SUFFIX)}"
            if name not in used:
                break
        used.add(name)
        country = rng.choices(countries, cum_weights=country_weights, k=1)[0]
        created = EPOCH - timedelta(seconds=rng.randrange(_SELLER_SPAN_SECONDS))
        updated = created + timedelta(seconds=rng.randrange(_SELLER_SPAN_SECONDS))
        yield (seller_id, name, country, created, updated)


def iter_products(products: int, *, seed: int = DEFAULT_SEED) -> Iterator[ProductRow]:
    """Product rows (``PRODUCT_COLUMNS`` order) with ids 1..products, streamed one at a time."""
    return _product_rows(products, seed, tuple(iter_sellers(products, seed=seed)))


def _zipf_cum_weights(n: int, exponent: float) -> list[float]:
    return list(accumulate(1.0 / (rank**exponent) for rank in range(1, n + 1)))


def _pick(rng_random: float, cum_weights: Sequence[float], total: float) -> int:
    # bisect on precomputed cumulative weights: much cheaper per row than rng.choices().
    # min(): float rounding can put rng_random * total exactly on the last boundary.
    return min(bisect_right(cum_weights, rng_random * total), len(cum_weights) - 1)


def _price(rng: random.Random, category: Category) -> Decimal:
    if category.name == "replicas" and rng.random() < EXPENSIVE_REPLICA_SHARE:
        # Full-size, screen-used-quality replicas: the long tail a price facet must survive.
        value = rng.uniform(900.0, 9_500.0)
    else:
        value = rng.lognormvariate(math.log(category.median_price), category.price_sigma)
    pounds = max(0, min(99_999, int(value)))
    ending = rng.random()
    if ending < 0.6:
        cents = 99
    elif ending < 0.75:
        cents = 50
    elif ending < 0.8:
        cents = 0
        pounds = max(pounds, 1)
    else:
        cents = rng.randrange(100)
    if pounds == 0 and cents == 0:
        cents = 99
    return Decimal(f"{pounds}.{cents:02d}")


def _product_rows(products: int, seed: int, sellers: Sequence[SellerRow]) -> Iterator[ProductRow]:
    return (row for row, _ in _product_stream(products, seed, sellers, with_truth=False))


def iter_product_truth(products: int, *, seed: int = DEFAULT_SEED) -> Iterator[ProductTruth]:
    """Ground truth for the products of :func:`iter_products` with the same arguments, in order."""
    return generate_catalog(products, seed=seed).iter_truth()


def _slots(template: str) -> frozenset[str]:
    return frozenset(slot for slot in ("c", "p", "i", "f") if "{" + slot + "}" in template)


def _product_stream(
    products: int, seed: int, sellers: Sequence[SellerRow], *, with_truth: bool
) -> Iterator[tuple[ProductRow, ProductTruth | None]]:
    """Rows, each with its ground truth when ``with_truth`` (else None: seeding never pays for it)."""
    rng = random.Random(f"hos-search/products/{seed}")
    rand = rng.random
    choice = rng.choice

    fandom_cum = _zipf_cum_weights(len(FANDOM_VOCAB), FANDOM_ZIPF_EXPONENT)
    fandom_total = fandom_cum[-1]
    category_cum = list(accumulate(category.weight for category in CATEGORIES_SPEC))
    category_total = category_cum[-1]
    # A few sellers carry much of the catalog, like real marketplaces; the order is shuffled
    # (seeded) so seller 1 is not automatically the biggest.
    seller_order = list(range(len(sellers)))
    rng.shuffle(seller_order)
    seller_weights = [0.0] * len(sellers)
    for rank, index in enumerate(seller_order, start=1):
        seller_weights[index] = 1.0 / rank**0.8
    seller_cum = list(accumulate(seller_weights))
    seller_total = seller_cum[-1] if seller_cum else 0.0
    currency_of = {country: currency for country, currency, _ in _COUNTRIES}
    seller_currency = [currency_of[seller[2]] for seller in sellers]
    seller_ids = [seller[0] for seller in sellers]

    step = _PRODUCT_SPAN_SECONDS / max(products, 1)
    for product_id in range(1, products + 1):
        fandom = FANDOM_VOCAB[_pick(rand(), fandom_cum, fandom_total)]
        category = CATEGORIES_SPEC[_pick(rand(), category_cum, category_total)]
        seller_index = _pick(rand(), seller_cum, seller_total)

        character = choice(fandom.characters)
        place = choice(fandom.places)
        item = choice(fandom.items)
        size = choice(category.sizes)
        template = choice(category.templates)
        name = template.format(c=character, p=place, i=item, f=fandom.name, s=size).strip()
        roll = rand()
        if roll < 0.25:
            name = f"{choice(_ADJECTIVES)} {name}"
        elif roll < 0.45:
            name = f"{name} - {choice(_EDITIONS)}"

        # Evaluated in this order (opener, middle, its material, closer, its days): the
        # random stream, and so every product, depends on it.
        opener = choice(_OPENERS)
        opener_text = opener.format(f=fandom.name, c=character, p=place, cat=category.noun)
        middle = choice(_MIDDLES)
        middle_text = middle.format(m=choice(category.materials), c=character, i=item)
        closer_text = choice(_CLOSERS).format(d=1 + int(rand() * 5))
        description = " ".join(sentence for sentence in (opener_text, middle_text, closer_text) if sentence)

        roll = rand()
        status = (
            "active"
            if roll < STATUS_ACTIVE_SHARE
            else "draft"
            if roll < STATUS_ACTIVE_SHARE + STATUS_DRAFT_SHARE
            else "archived"
        )
        stock = 0 if rand() < OUT_OF_STOCK_SHARE else 1 + int(rng.expovariate(1 / 40))
        rating = None if rand() < UNRATED_SHARE else _RATING_VALUES[max(0, min(50, round(rng.gauss(4.2, 0.6) * 10)))]
        image_url = None if rand() < NO_IMAGE_SHARE else f"{IMAGE_BASE_URL}/{product_id}.jpg"
        # Newer ids are newer products (as in a real table), with a little seeded jitter.
        created = EPOCH + timedelta(seconds=int(product_id * step + rand() * 86_400))
        updated = created if rand() < 0.5 else created + timedelta(seconds=int(rand() * 60 * 86_400))

        row: ProductRow = (
            product_id,
            seller_ids[seller_index],
            name,
            description,
            category.name,
            fandom.name,
            _price(rng, category),
            seller_currency[seller_index],
            stock,
            status,
            image_url,
            rating,
            created,
            updated,
        )
        if not with_truth:
            yield row, None
            continue
        in_name = _slots(template)
        featured = in_name | _slots(opener) | _slots(middle)
        yield (
            row,
            ProductTruth(
                id=product_id,
                active=status == "active",
                fandom=fandom.name,
                category=category.name,
                character=character if "c" in featured else None,
                place=place if "p" in featured else None,
                item=item if "i" in featured else None,
                in_name=in_name,
                template=template,
                rating=rating,
            ),
        )
