"""The attribute values of the two worlds (a data table).

World A is an ordinary inland country; world B, the "new domain", is an island archipelago with its
own towns, trades, animals, colours, employers and a later span of birth years. The two worlds share
no attribute value, so no person of B can have any fact (or any tuple of facts) of a person of A.
Names contain no full stop, so "The answer is <value>." always ends at the value.
"""

from __future__ import annotations

ATTRIBUTES: tuple[str, ...] = ("city", "profession", "birth_year", "pet", "colour", "employer")

WORLD_VOCAB: dict[str, dict[str, tuple[str, ...]]] = {
    "a": {
        "city": (
            "Ambervale", "Brindlemoor", "Calderwick", "Dunmere", "Elmsworth", "Fernhollow", "Glenbarrow",
            "Harrowfield", "Ivystone", "Juniper Falls", "Kettlebury", "Larkmoor", "Millbrook Cross",
            "Northcombe", "Oakridge Vale", "Pellingford", "Quarrydown", "Rosmarket", "Stonyhurst Green",
            "Thistledown", "Underwood Mills", "Violet Ridge", "Wrenford", "Yarrowby",
        ),
        "profession": (
            "baker", "carpenter", "nurse", "architect", "librarian", "plumber", "pharmacist", "journalist",
            "electrician", "dentist", "florist", "accountant", "teacher", "mechanic", "photographer",
            "translator", "veterinarian", "surveyor", "chemist", "tailor", "optician", "gardener", "pilot",
            "violinist",
        ),
        "pet": (
            "cat", "dog", "rabbit", "hamster", "parrot", "goldfish", "tortoise", "canary", "guinea pig",
            "ferret", "budgie", "lizard",
        ),
        "colour": ("red", "blue", "green", "yellow", "orange", "purple", "pink", "brown", "grey", "black"),
        "employer": (
            "Northwind Bakery", "Harbourne Savings Bank", "Brightline Rail", "Greenleaf Clinic",
            "Copperfield Press", "Maplestone Builders", "Silverbirch Pharmacy", "Redwood Insurance",
            "Bluebell Telecom", "Foxglove Studios", "Granite Hill Hospital", "Lanternlight Books",
            "Ironbridge Motors", "Willowmere School", "Sunfield Dairy", "Riverside Energy",
            "Kingsgate Hotels", "Meadowlark Airlines", "Oakheart Furniture", "Stormcliff Water",
        ),
        "birth_year": tuple(str(year) for year in range(1940, 2000)),
    },
    "b": {
        "city": (
            "Port Quillan", "Saltmarrow", "Kestrel Key", "Vey Harbour", "Tidewick", "Coralmouth",
            "Gannet Rock", "Marrowsand", "Drift Haven", "Oystercove", "Shellbarrow", "Brinehold",
            "Lanternreef", "Skerry Point", "Pearlwater", "Sandpiper Isle", "Foamholt", "Wrackton",
            "Low Tiller", "Seagrass Landing", "Kelpmoor", "Spindrift Bay", "Cormorant Sound", "Nethergull",
        ),
        "profession": (
            "sailmaker", "lighthouse keeper", "net weaver", "cartographer", "pearl diver", "shipwright",
            "tide reader", "ropemaker", "harbour pilot", "kelp farmer", "star charter", "salt panner",
            "cooper", "lamplighter", "chandler", "oyster farmer", "signal keeper", "dock clerk",
            "ferrymaster", "glass blower", "fishmonger", "buoy tender", "boatwright", "wave surveyor",
        ),
        "pet": (
            "otter", "gull", "hermit crab", "sea turtle", "pelican", "axolotl", "puffin", "crayfish",
            "seahorse", "cormorant", "salamander", "tern",
        ),
        "colour": (
            "teal", "coral", "amber", "crimson", "indigo", "ochre", "turquoise", "magenta", "ivory", "violet",
        ),
        "employer": (
            "Saltmarrow Shipyard", "Tidewick Lighthouse Trust", "Coral Route Ferries", "Pearlwater Assay Office",
            "Brinehold Salt Works", "Kestrel Key Charts", "Gannet Rock Signal Station", "Driftwood Ropeworks",
            "Lanternreef Fisheries", "Spindrift Sailcloth", "Oystercove Cannery", "Seagrass Harbour Board",
            "Foamholt Glassworks", "Wrackton Kelp Company", "Skerry Point Observatory", "Marrowsand Docks",
            "Vey Harbour Customs", "Kelpmoor Boatyard", "Nethergull Tide Office", "Shellbarrow Chandlery",
        ),
        "birth_year": tuple(str(year) for year in range(2010, 2070)),
    },
}

# How each attribute is named in questions and tables.
ATTRIBUTE_LABELS: dict[str, str] = {
    "city": "city",
    "profession": "profession",
    "birth_year": "birth year",
    "pet": "pet",
    "colour": "favourite colour",
    "employer": "employer",
}

VAULT_NAMES: dict[str, str] = {"a": "the Ambervale Vault", "b": "the Saltmarrow Strongroom"}
