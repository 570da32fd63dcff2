"""The people's forms: the profile (full name, optional CCCD number) and the health declaration."""

from __future__ import annotations

import time
import unicodedata
from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from backoffice.personal.services import cccd_problem

YES_NO = [("no", _("Không")), ("yes", _("Có"))]


class ProfileForm(forms.Form):
    full_name = forms.CharField(label=_("Họ và tên"), max_length=100,
                                widget=forms.TextInput(attrs={"placeholder": _("VD: Nguyễn Văn A"),
                                                              "autocomplete": "name"}))
    cccd = forms.CharField(label=_("Số CCCD (không bắt buộc)"), required=False, max_length=20,
                           widget=forms.TextInput(attrs={"inputmode": "numeric", "autocomplete": "off"}))

    def clean_full_name(self) -> str:
        name = unicodedata.normalize("NFC", self.cleaned_data["full_name"]).strip()
        if not any(ch.isalpha() for ch in name) or any(unicodedata.category(ch)[0] == "C" for ch in name):
            raise forms.ValidationError(_("Bạn vui lòng nhập thông tin Họ và tên"))
        return " ".join(name.split())

    def clean_cccd(self) -> str:
        number = "".join((self.cleaned_data.get("cccd") or "").split())
        if number and cccd_problem(number, time.gmtime().tm_year) is not None:
            raise forms.ValidationError(_("Số CCCD không hợp lệ (12 chữ số, mã tỉnh, năm sinh)"))
        return number


# (field, question) of the 2021 domestic declaration, in the order of the form.
QUESTION_TEXT: list[tuple[str, Any]] = [
    ("fever", _("Sốt")),
    ("cough", _("Ho")),
    ("breath", _("Khó thở")),
    ("throat", _("Đau họng")),
    ("taste_smell", _("Mất vị giác hoặc khứu giác")),
    ("fatigue", _("Mệt mỏi")),
    ("pneumonia", _("Viêm phổi")),
    ("contact_case", _("Tiếp xúc gần với người mắc COVID-19")),
    ("contact_suspect", _("Tiếp xúc gần với người nghi ngờ mắc COVID-19")),
    ("contact_abroad", _("Tiếp xúc gần với người từ nước ngoài hoặc từ vùng có dịch về")),
    ("travel_outbreak", _("Đến hoặc đi qua vùng đang có dịch COVID-19")),
]
SYMPTOM_COUNT = 7


class DeclarationForm(forms.Form):
    """Every question needs an answer, Có or Không (nothing is pre-selected)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, text in QUESTION_TEXT:
            self.fields[name] = forms.ChoiceField(label=text, choices=YES_NO, widget=forms.RadioSelect,
                                                  error_messages={"required": _("Bạn vui lòng chọn Có hoặc Không")})

    def answers(self) -> dict[str, bool]:
        return {name: self.cleaned_data[name] == "yes" for name, _t in QUESTION_TEXT}

    def symptom_fields(self) -> list[Any]:
        return [self[name] for name, _t in QUESTION_TEXT[:SYMPTOM_COUNT]]

    def exposure_fields(self) -> list[Any]:
        return [self[name] for name, _t in QUESTION_TEXT[SYMPTOM_COUNT:]]
