import phonenumbers
import pycountry
from hypothesis import given
from hypothesis import strategies as st

from segmint.data.normalise import normalise_country, normalise_email, normalise_phone

emails = st.from_regex(r"[A-Za-z0-9._%+-]{1,20}@[A-Za-z0-9-]{1,15}\.[A-Za-z]{2,6}", fullmatch=True)
padding = st.text(alphabet=" \t", max_size=3)


@given(emails, padding, padding)
def test_email_normalisation_ignores_case_and_surrounding_space(email, left, right):
    variant = left + email.upper() + right
    assert normalise_email(variant) == normalise_email(email) == email.lower()


@given(emails)
def test_email_normalisation_is_idempotent(email):
    once = normalise_email(email)
    assert normalise_email(once) == once


def test_blank_email_is_missing():
    assert normalise_email("   ") is None
    assert normalise_email(None) is None


REGIONS = ["DE", "FR", "GB", "US", "IT", "ES", "NL"]


@given(st.sampled_from(REGIONS), st.sampled_from(list(phonenumbers.PhoneNumberFormat.__dict__)))
def test_every_format_of_a_valid_number_normalises_to_the_same_e164(region, _):
    example = phonenumbers.example_number(region)
    e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
    for fmt in (
        phonenumbers.PhoneNumberFormat.NATIONAL,
        phonenumbers.PhoneNumberFormat.INTERNATIONAL,
        phonenumbers.PhoneNumberFormat.E164,
    ):
        written = phonenumbers.format_number(example, fmt)
        assert normalise_phone(written, region) == e164
        assert normalise_phone(e164, "US") == e164  # + prefix wins over the region


@given(st.text(alphabet="abcdefghij-_ ", max_size=12))
def test_text_without_digits_is_not_a_phone(text):
    assert normalise_phone(text) is None


@given(st.sampled_from(list(pycountry.countries)))
def test_country_codes_and_names_map_to_alpha2(country):
    for written in (country.alpha_2, country.alpha_3.lower(), country.name, country.name.upper()):
        assert normalise_country(written) == country.alpha_2


def test_unknown_country_is_none():
    assert normalise_country("Atlantis") is None
    assert normalise_country("") is None
    assert normalise_country("uk") == "GB"
