{#- Returns the jsonb expression when it is an array and an empty array
    otherwise, so that jsonb_array_elements and jsonb_array_length accept
    objects whose array property QBO left out. -#}
{% macro jsonb_array_or_empty(expression) -%}
    case
        when jsonb_typeof({{ expression }}) = 'array' then {{ expression }}
        else '[]'::jsonb
    end
{%- endmacro %}
