"""Shipped reference lists: countries, names, streets, cities, phone ranges.

All names are common given and family names; streets and cities are real places
used only as plausible values. No list contains a comma, a double quote or a
backslash, so values can be written into CSV and JSON without escaping.
Phone prefixes are national significant number prefixes that ``phonenumbers``
accepts as valid for the country with any six further digits (checked by the
tests).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass


def _split(text: str) -> tuple[str, ...]:
    """Items of a comma-separated list."""
    return tuple(item.strip() for item in text.split(","))


def _pairs(text: str) -> tuple[tuple[str, str], ...]:
    """``name=value`` items of a comma-separated list."""
    return tuple(
        (name.strip(), value.strip()) for name, value in (i.split("=") for i in _split(text))
    )


FIRST_NAMES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # language: (female, male)
    "de": (
        _split(
            "Anna, Lena, Julia, Sarah, Laura, Lea, Hannah, Sophie, Katharina, Jana, Sabine, "
            "Petra, Claudia, Monika, Ursula, Birgit, Franziska, Charlotte, Marie, Emma, Mia, "
            "Johanna, Greta, Anja"
        ),
        _split(
            "Lukas, Jonas, Leon, Finn, Paul, Felix, Maximilian, Thomas, Michael, Andreas, "
            "Stefan, Klaus, Wolfgang, Jürgen, Uwe, Tobias, Florian, Sebastian, Matthias, "
            "Alexander, Jan, Niklas, Moritz, Björn"
        ),
    ),
    "fr": (
        _split(
            "Camille, Léa, Manon, Chloé, Emma, Inès, Sarah, Julie, Marie, Nathalie, Isabelle, "
            "Sophie, Céline, Aurélie, Élodie, Claire, Margaux, Juliette, Louise, Amandine, "
            "Pauline, Mathilde, Anaïs, Lucie"
        ),
        _split(
            "Lucas, Hugo, Louis, Gabriel, Arthur, Jules, Nathan, Thomas, Nicolas, Julien, "
            "Pierre, François, Antoine, Mathieu, Guillaume, Olivier, Philippe, Sébastien, "
            "Maxime, Théo, Raphaël, Benoît, Étienne, Rémi"
        ),
    ),
    "en": (
        _split(
            "Olivia, Emily, Sophie, Jessica, Charlotte, Amelia, Grace, Chloe, Hannah, Lucy, "
            "Sarah, Emma, Rachel, Laura, Rebecca, Megan, Ashley, Jennifer, Elizabeth, "
            "Katherine, Aoife, Siobhan, Niamh, Ciara"
        ),
        _split(
            "Oliver, Jack, Harry, George, Thomas, James, William, Daniel, Michael, David, "
            "Matthew, Christopher, Joshua, Andrew, Robert, Benjamin, Samuel, Ryan, Liam, "
            "Noah, Ethan, Seán, Conor, Patrick"
        ),
    ),
    "nl": (
        _split(
            "Emma, Julia, Sophie, Lotte, Anna, Sanne, Lisa, Fleur, Eva, Femke, Iris, Anouk, "
            "Marieke, Ingrid, Esther, Linda, Annelies, Noor, Tess, Saar, Maud, Evi, Roos, "
            "Ilse"
        ),
        _split(
            "Daan, Sem, Lucas, Levi, Bram, Thijs, Jesse, Ruben, Lars, Jeroen, Pieter, Willem, "
            "Joost, Bas, Sander, Maarten, Koen, Niels, Stijn, Wouter, Thomas, Tim, Sven, Gijs"
        ),
    ),
    "es": (
        _split(
            "Lucía, María, Paula, Laura, Marta, Sara, Carmen, Ana, Elena, Cristina, Isabel, "
            "Pilar, Nuria, Rocío, Alba, Andrea, Sofía, Irene, Claudia, Julia, Beatriz, "
            "Raquel, Silvia, Teresa"
        ),
        _split(
            "Hugo, Pablo, Daniel, Alejandro, Javier, David, Carlos, Jorge, Manuel, Antonio, "
            "José, Francisco, Sergio, Álvaro, Diego, Adrián, Miguel, Rafael, Fernando, Luis, "
            "Raúl, Iván, Rubén, Óscar"
        ),
    ),
    "it": (
        _split(
            "Giulia, Sofia, Aurora, Alice, Martina, Chiara, Francesca, Sara, Valentina, "
            "Federica, Elena, Laura, Paola, Silvia, Roberta, Alessandra, Giorgia, Beatrice, "
            "Ginevra, Emma, Anna, Elisa, Marta, Serena"
        ),
        _split(
            "Leonardo, Francesco, Alessandro, Lorenzo, Mattia, Andrea, Gabriele, Marco, "
            "Matteo, Luca, Giuseppe, Giovanni, Antonio, Stefano, Roberto, Paolo, Davide, "
            "Simone, Federico, Riccardo, Tommaso, Nicola, Niccolò, Fabio"
        ),
    ),
}

LAST_NAMES: dict[str, tuple[str, ...]] = {
    "de": _split(
        "Müller, Schmidt, Schneider, Fischer, Weber, Meyer, Wagner, Becker, Schulz, Hoffmann, "
        "Schäfer, Koch, Bauer, Richter, Klein, Wolf, Schröder, Neumann, Schwarz, Zimmermann, "
        "Braun, Krüger, Hofmann, Hartmann, Lange, Schmitt, Werner, Krause, Meier, Lehmann, "
        "Huber, Mayer, Fuchs, Keller, Vogel, Jäger, Gruber, Baumann, Frank, Berger"
    ),
    "fr": _split(
        "Martin, Bernard, Dubois, Thomas, Robert, Richard, Petit, Durand, Leroy, Moreau, "
        "Simon, Laurent, Lefebvre, Michel, Garcia, David, Bertrand, Roux, Vincent, Fournier, "
        "Morel, Girard, André, Lefèvre, Mercier, Dupont, Lambert, Bonnet, François, Martinez, "
        "Peeters, Janssens, Maes, Jacobs, Mertens, Willems, Claes, Goossens, Wouters, Lemaire"
    ),
    "en": _split(
        "Smith, Jones, Williams, Taylor, Brown, Davies, Evans, Wilson, Thomas, Johnson, "
        "Roberts, Robinson, Thompson, Wright, Walker, White, Edwards, Hughes, Green, Hall, "
        "Lewis, Harris, Clarke, Patel, Jackson, Wood, Turner, Martin, Cooper, Hill, Murphy, "
        "Kelly, Byrne, Ryan, Walsh, Miller, Davis, Anderson, Moore, Clark"
    ),
    "nl": _split(
        "de Jong, Jansen, de Vries, van den Berg, van Dijk, Bakker, Janssen, Visser, Smit, "
        "Meijer, de Boer, Mulder, de Groot, Bos, Vos, Peters, Hendriks, van Leeuwen, Dekker, "
        "Brouwer, de Wit, Dijkstra, Smits, de Graaf, van der Meer, van der Linden, Kok, "
        "Jacobs, de Haan, Vermeulen, van den Heuvel, van der Veen, van den Broek, de Bruijn, "
        "Schouten, Willems, van Beek, Hoekstra, Koster, Prins"
    ),
    "es": _split(
        "García, Rodríguez, González, Fernández, López, Martínez, Sánchez, Pérez, Gómez, "
        "Martín, Jiménez, Ruiz, Hernández, Díaz, Moreno, Muñoz, Álvarez, Romero, Alonso, "
        "Gutiérrez, Navarro, Torres, Domínguez, Vázquez, Ramos, Gil, Ramírez, Serrano, "
        "Blanco, Molina, Morales, Suárez, Ortega, Delgado, Castro, Ortiz, Rubio, Marín, Sanz, "
        "Iglesias"
    ),
    "it": _split(
        "Rossi, Russo, Ferrari, Esposito, Bianchi, Romano, Colombo, Ricci, Marino, Greco, "
        "Bruno, Gallo, Conti, De Luca, Mancini, Costa, Giordano, Rizzo, Lombardi, Moretti, "
        "Barbieri, Fontana, Santoro, Mariani, Rinaldi, Caruso, Ferrara, Galli, Martini, "
        "Leone, Longo, Gentile, Martinelli, Vitale, Lombardo, Serra, Coppola, De Santis, "
        "D'Angelo, Marchetti"
    ),
}


@dataclass(frozen=True)
class Country:
    """Reference data of one country.

    ``cities`` pairs a city with the fixed start of its postcodes; ``postcode``
    is the pattern of the rest (``9`` a digit, ``A`` a letter, anything else
    literal). ``number_first`` tells whether the house number precedes the
    street name.
    """

    alpha2: str
    alpha3: str
    name: str
    language: str
    weight: float
    cities: tuple[tuple[str, str], ...]
    postcode: str
    streets: tuple[str, ...]
    number_first: bool
    mobile_prefixes: tuple[str, ...]
    fixed_prefixes: tuple[str, ...]


COUNTRIES: tuple[Country, ...] = (
    Country(
        alpha2="DE",
        alpha3="DEU",
        name="Germany",
        language="de",
        weight=0.25,
        cities=_pairs(
            "Berlin=10, Hamburg=20, München=80, Köln=50, Frankfurt am Main=60, Stuttgart=70, "
            "Düsseldorf=40, Leipzig=04, Dortmund=44, Bremen=28, Dresden=01, Hannover=30, "
            "Nürnberg=90"
        ),
        postcode="999",
        streets=_split(
            "Hauptstraße, Bahnhofstraße, Gartenstraße, Schulstraße, Dorfstraße, Bergstraße, "
            "Lindenstraße, Kirchstraße, Waldstraße, Ringstraße, Goethestraße, Schillerstraße, "
            "Am Markt, Mühlenweg"
        ),
        number_first=False,
        mobile_prefixes=("1601", "1702", "1761"),
        fixed_prefixes=("3012", "4021", "8912"),
    ),
    Country(
        alpha2="FR",
        alpha3="FRA",
        name="France",
        language="fr",
        weight=0.13,
        cities=_pairs(
            "Paris=750, Marseille=130, Lyon=690, Toulouse=310, Nice=060, Nantes=440, "
            "Strasbourg=670, Montpellier=340, Bordeaux=330, Lille=590, Rennes=350"
        ),
        postcode="99",
        streets=_split(
            "Rue de la Paix, Rue Victor Hugo, Avenue Jean Jaurès, Rue de la République, "
            "Boulevard Gambetta, Rue Pasteur, Place de la Mairie, Rue du Moulin, Avenue de la "
            "Gare, Rue des Écoles, Chemin des Vignes"
        ),
        number_first=True,
        mobile_prefixes=("612", "698"),
        fixed_prefixes=("123", "491"),
    ),
    Country(
        alpha2="GB",
        alpha3="GBR",
        name="United Kingdom",
        language="en",
        weight=0.12,
        cities=_pairs(
            "London=SW, Manchester=M, Birmingham=B, Leeds=LS, Glasgow=G, Liverpool=L, "
            "Bristol=BS, Sheffield=S, Edinburgh=EH, Cardiff=CF, Nottingham=NG"
        ),
        postcode="9 9AA",
        streets=_split(
            "High Street, Station Road, Main Street, Park Road, Church Road, Church Street, "
            "London Road, Victoria Road, Green Lane, Manor Road, Kings Road, Queens Road, Mill "
            "Lane"
        ),
        number_first=True,
        mobile_prefixes=("7400",),
        fixed_prefixes=("1212", "2079"),
    ),
    Country(
        alpha2="NL",
        alpha3="NLD",
        name="Netherlands",
        language="nl",
        weight=0.08,
        cities=_pairs(
            "Amsterdam=10, Rotterdam=30, Den Haag=25, Utrecht=35, Eindhoven=56, Groningen=97, "
            "Tilburg=50, Almere=13, Breda=48, Nijmegen=65"
        ),
        postcode="99 AA",
        streets=_split(
            "Kerkstraat, Schoolstraat, Molenstraat, Dorpsstraat, Stationsweg, Julianastraat, "
            "Beatrixstraat, Nieuwstraat, Markt, Kastanjelaan"
        ),
        number_first=False,
        mobile_prefixes=("612", "687"),
        fixed_prefixes=("101", "201"),
    ),
    Country(
        alpha2="ES",
        alpha3="ESP",
        name="Spain",
        language="es",
        weight=0.08,
        cities=_pairs(
            "Madrid=280, Barcelona=080, Valencia=460, Sevilla=410, Zaragoza=500, Málaga=290, "
            "Murcia=300, Palma=070, Bilbao=480, Alicante=030"
        ),
        postcode="99",
        streets=_split(
            "Calle Mayor, Calle Real, Avenida de la Constitución, Calle de Alcalá, Gran Vía, "
            "Calle del Sol, Plaza de España, Calle Nueva, Paseo del Prado, Calle San Juan"
        ),
        number_first=False,
        mobile_prefixes=("612", "699", "710"),
        fixed_prefixes=("910", "934"),
    ),
    Country(
        alpha2="IT",
        alpha3="ITA",
        name="Italy",
        language="it",
        weight=0.08,
        cities=_pairs(
            "Roma=001, Milano=201, Napoli=801, Torino=101, Palermo=901, Genova=161, "
            "Bologna=401, Firenze=501, Bari=701, Venezia=301"
        ),
        postcode="99",
        streets=_split(
            "Via Roma, Via Garibaldi, Via Mazzini, Via Cavour, Corso Italia, Via Dante "
            "Alighieri, Via Verdi, Piazza della Repubblica, Via Marconi, Viale Europa"
        ),
        number_first=False,
        mobile_prefixes=("3123", "3471", "3398"),
        fixed_prefixes=("0212", "0612"),
    ),
    Country(
        alpha2="AT",
        alpha3="AUT",
        name="Austria",
        language="de",
        weight=0.06,
        cities=_pairs(
            "Wien=10, Graz=80, Linz=40, Salzburg=50, Innsbruck=60, Klagenfurt=90, Villach=95, "
            "Wels=46"
        ),
        postcode="99",
        streets=_split(
            "Hauptplatz, Bahnhofstraße, Kirchengasse, Schulgasse, Wiener Straße, Linzer "
            "Straße, Mariahilfer Straße, Herrengasse, Lindengasse"
        ),
        number_first=False,
        mobile_prefixes=("664", "676", "699"),
        fixed_prefixes=("1234",),
    ),
    Country(
        alpha2="BE",
        alpha3="BEL",
        name="Belgium",
        language="fr",
        weight=0.05,
        cities=_pairs(
            "Bruxelles=10, Antwerpen=20, Gent=90, Charleroi=60, Liège=40, Brugge=80, Namur=50, "
            "Leuven=30"
        ),
        postcode="99",
        streets=_split(
            "Rue de la Station, Kerkstraat, Rue de l'Église, Stationsstraat, Grand-Place, Rue "
            "Royale, Dorpstraat, Avenue Louise"
        ),
        number_first=True,
        mobile_prefixes=("470", "496"),
        fixed_prefixes=("93",),
    ),
    Country(
        alpha2="CH",
        alpha3="CHE",
        name="Switzerland",
        language="de",
        weight=0.05,
        cities=_pairs(
            "Zürich=80, Genève=12, Basel=40, Lausanne=10, Bern=30, Winterthur=84, Luzern=60, "
            "St. Gallen=90"
        ),
        postcode="99",
        streets=_split(
            "Bahnhofstrasse, Hauptstrasse, Dorfstrasse, Kirchweg, Seestrasse, Rue du Rhône, "
            "Bergstrasse, Schulhausstrasse"
        ),
        number_first=False,
        mobile_prefixes=("781", "791", "762"),
        fixed_prefixes=("212", "443"),
    ),
    Country(
        alpha2="US",
        alpha3="USA",
        name="United States",
        language="en",
        weight=0.07,
        cities=_pairs(
            "New York=100, Los Angeles=900, Chicago=606, Houston=770, Phoenix=850, "
            "Philadelphia=191, San Francisco=941, Seattle=981, Boston=021, Austin=787"
        ),
        postcode="99",
        streets=_split(
            "Main Street, Oak Street, Maple Avenue, Park Avenue, Washington Street, Elm "
            "Street, Cedar Lane, Lake Drive, Pine Street, Sunset Boulevard"
        ),
        number_first=True,
        mobile_prefixes=("2122", "4153", "3124"),
        fixed_prefixes=("6172", "2065"),
    ),
    Country(
        alpha2="IE",
        alpha3="IRL",
        name="Ireland",
        language="en",
        weight=0.03,
        cities=_pairs(
            "Dublin=D02, Cork=T12, Galway=H91, Limerick=V94, Waterford=X91, Kilkenny=R95"
        ),
        postcode=" A9A9",
        streets=_split(
            "Main Street, Church Street, Bridge Street, O'Connell Street, Patrick Street, "
            "Castle Street, Mill Road"
        ),
        number_first=True,
        mobile_prefixes=("850", "871", "861"),
        fixed_prefixes=("12",),
    ),
)

#: Currency of every order (the synthetic shop sells in euro everywhere).
CURRENCY = "EUR"

#: E-mail domains (reserved example domains, never real mailboxes).
EMAIL_DOMAINS: tuple[str, ...] = (
    "example.com",
    "example.org",
    "example.net",
    "mail.example.com",
    "post.example.org",
    "inbox.example.net",
)

_TRANSLITERATION = str.maketrans(
    {"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue", "'": ""}
)


def ascii_slug(name: str) -> str:
    """Lower-case ASCII form of a name for e-mail local parts (``Müller`` -> ``mueller``)."""
    text = name.translate(_TRANSLITERATION)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return "".join(ch for ch in text.lower() if ch.isalnum())
