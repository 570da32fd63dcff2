"""The venue registration form: the 2021 fields, checked by ``provisioning.venues.validate_venue``."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from firmware.core.errors import ConfigError
from provisioning.venues import DivisionMaps, Venue, validate_venue

# The CLI option each message starts with -> the form field it belongs beside.
OPTION_FIELDS = {"--name": "name", "--province": "province", "--district": "district", "--ward": "ward",
                 "--address": "address", "--registrant": "registrant", "--phone": "phone"}
REQUIRED = ("name", "province", "ward", "address", "registrant", "phone")


def field_of(problem: str) -> str | None:
    """The form field a validate_venue message is about (its leading option), or None."""
    first = problem.split(" ", 1)[0]
    return OPTION_FIELDS.get(first)


class RegistrationForm(forms.Form):
    """Step 1, "Thông tin của địa điểm". Every problem is shown at once, beside its field.

    Args:
        parents: (venue_id, name) of the registrant's own venues, for "Nằm trong địa điểm".
        fixed_phone: when logged in, the registrant is the logged-in person (E.164).
    """

    name = forms.CharField(label=_("Tên địa điểm"), required=False, max_length=300,
                           widget=forms.TextInput(attrs={"placeholder": _("VD: Cửa hàng ABC")}))
    parent = forms.ChoiceField(label=_("Nằm trong địa điểm"), required=False)
    province = forms.CharField(label=_("Tỉnh/TP của địa điểm"), required=False, max_length=120,
                               widget=forms.TextInput(attrs={"list": "provinces", "autocomplete": "off"}))
    district = forms.CharField(label=_("Quận/Huyện của địa điểm"), required=False, max_length=120,
                               help_text=_("Để trống với địa chỉ hai cấp (từ 1/7/2025)"),
                               widget=forms.TextInput(attrs={"list": "districts", "autocomplete": "off"}))
    ward = forms.CharField(label=_("Phường/Xã của địa điểm"), required=False, max_length=120,
                           widget=forms.TextInput(attrs={"list": "wards", "autocomplete": "off"}))
    address = forms.CharField(label=_("Số nhà, phố, tổ dân phố/thôn/đội"), required=False, max_length=400,
                              widget=forms.TextInput(attrs={"placeholder": _("VD: Số 120 Đường Lê Duẩn")}))
    registrant = forms.CharField(label=_("Họ và tên người đăng ký"), required=False, max_length=150,
                                 widget=forms.TextInput(attrs={"placeholder": _("VD: Nguyễn Văn A"),
                                                               "autocomplete": "name"}))
    phone = forms.CharField(label=_("Số điện thoại người đăng ký"), required=False, max_length=20,
                            widget=forms.TextInput(attrs={"placeholder": _("VD: 0123456789"), "inputmode": "tel",
                                                          "autocomplete": "tel"}))

    required_fields = REQUIRED

    def __init__(self, *args: Any, parents: list[tuple[str, str]] | None = None, fixed_phone: str = "",
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["parent"].choices = [("", "—")] + list(parents or [])
        if not parents:
            del self.fields["parent"]
        self.fixed_phone = fixed_phone
        if fixed_phone:
            self.fields["phone"].disabled = True
            self.fields["phone"].initial = fixed_phone
        self.venue: Venue | None = None

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        empty = [f for f in REQUIRED if not (data.get(f) or "").strip()]
        for name in empty:
            # The 2021 page's own words for an empty required field.
            self.add_error(name, _("Bạn vui lòng nhập thông tin %(field)s") % {"field": self.fields[name].label})
        try:
            self.venue = validate_venue(name=data.get("name"), province=data.get("province"),
                                        district=data.get("district") or None, ward=data.get("ward"),
                                        address=data.get("address"), registrant=data.get("registrant"),
                                        phone=data.get("phone"), divisions=DivisionMaps.default())
        except ConfigError as err:
            for problem in err.problems:
                target = field_of(problem)
                if target in empty:
                    continue  # already said, in the page's words
                self.add_error(target, problem)
        return data


class OtpForm(forms.Form):
    """Step 2 and the login's second step: "Mã OTP"."""

    code = forms.CharField(label=_("Mã OTP"), required=False, max_length=12,
                           widget=forms.TextInput(attrs={"inputmode": "numeric", "autocomplete": "one-time-code",
                                                         "pattern": "[0-9 ]*"}))

    def clean_code(self) -> str:
        code = "".join((self.cleaned_data.get("code") or "").split())
        if not code:
            raise forms.ValidationError(_("Bạn vui lòng nhập thông tin Mã OTP"))
        if not code.isdigit() or len(code) != 6:
            raise forms.ValidationError(_("Mã OTP gồm 6 chữ số"))
        return code


class PhoneForm(forms.Form):
    """The login's first step: the registered phone."""

    phone = forms.CharField(label=_("Số điện thoại"), max_length=20, required=False,
                            widget=forms.TextInput(attrs={"placeholder": _("VD: 0123456789"), "inputmode": "tel",
                                                          "autocomplete": "tel"}))

    def clean_phone(self) -> str:
        from provisioning.venues import normalise_phone

        text = self.cleaned_data.get("phone") or ""
        if not text.strip():
            raise forms.ValidationError(_("Bạn vui lòng nhập thông tin Số điện thoại"))
        e164 = normalise_phone(text)
        if e164 is None:
            raise forms.ValidationError(_("Số điện thoại không đúng: cần 10 chữ số bắt đầu bằng 03, 05, 07, 08 "
                                          "hoặc 09, VD: 0912 345 678"))
        return e164


class LabelForm(forms.Form):
    label = forms.CharField(label=_("Nhãn"), max_length=60, required=False)


class VenueCodeForm(forms.Form):
    """"+ Thêm địa điểm của người khác": the venue's code, as printed on its poster."""

    venue_id = forms.CharField(label=_("Mã địa điểm"), max_length=20,
                               widget=forms.TextInput(attrs={"placeholder": "v-0123456789ab"}))

    def clean_venue_id(self) -> str:
        from provisioning.venues import VENUE_ID_PATTERN

        text = (self.cleaned_data.get("venue_id") or "").strip().lower()
        if not VENUE_ID_PATTERN.match(text):
            raise forms.ValidationError(_("Mã địa điểm có dạng v- và 12 ký tự, in trên áp phích mã QR"))
        return text


class InviteForm(PhoneForm):
    """The registrant invites another phone to co-manage the venue."""
